#!/usr/bin/env python3
"""Rebuild examples/rag/data/{passages,train,dev}.jsonl from CPython 3.11.7's pydoc topics.

The corpus is the help text that `help("try")` shows: `Lib/pydoc_data/topics.py`, generated
from the Python Language Reference by Sphinx at release time and shipped with every CPython
(PSF License 2, see ../data/LICENSE-DATA.md). Stdlib only; nothing is downloaded.

Passages: the paragraphs of the topics in TOPICS (wrapped lines joined), 20 to 90 words,
without grammar rules, code samples, headings or footnotes; a paragraph already taken from an earlier
topic is not repeated (the "compound" chapter repeats the "try", "with", ... topics). A
passage's id is `<topic>-<n>`, n being the paragraph's position in its topic.

Questions (cloze): a sentence of a passage that names a Python keyword in double quotes (the
reference writes keywords as "break"), the first keyword it names only once replaced by ___ . The answer is the
keyword; the gold passages are every passage that contains the sentence. So the answer is
in the gold passage, and retrieval is needed to know it for sure ("___" in 'a "___" clause
is executed' could be several keywords). Sentences longer than MAX_WORDS are cut to the
MAX_WORDS words around the blank.

    python examples/rag/scripts/rebuild_data.py                      # this interpreter's topics.py
    python examples/rag/scripts/rebuild_data.py --topics PATH --out /tmp/check
"""
import argparse
import hashlib
import json
import keyword
import random
import re
import sys
from pathlib import Path

# Pinned so a rebuild can only come from the exact file the data was cut from (CPython 3.11.7).
TOPICS_SHA256 = "abaa56a64551d8eead1b19cbae3c6db443f99f0cab81df07bed3cb75c0db9346"
TOPICS = ("compound", "assert", "break", "continue", "del", "global", "nonlocal", "pass", "raise",
          "return", "yield", "import", "exceptions", "booleans", "comparisons", "in", "lambda",
          "context-managers", "truth", "execmodel")
MIN_WORDS, MAX_WORDS = 20, 90   # passage length: short passages keep embedding and prompts cheap
Q_MIN, Q_MAX = 8, 10            # question length in words: a window of 10 around the blank
SEED = 0
SPLITS = (("train", 30), ("dev", 30))
KEYWORDS = sorted(k for k in keyword.kwlist if k not in ("True", "False", "None"))


def load_topics(path):
    raw = Path(path).read_bytes()
    digest = hashlib.sha256(raw).hexdigest()
    if digest != TOPICS_SHA256:
        sys.exit(f"{path}: sha256 {digest} != pinned {TOPICS_SHA256} (CPython 3.11.7's pydoc_data/topics.py)")
    scope = {}
    exec(compile(raw, str(path), "exec"), scope)  # the file is one dict literal: `topics = {...}`
    return scope["topics"]


def passages(topics):
    seen, out = set(), []
    for topic in TOPICS:
        for n, para in enumerate(topics[topic].split("\n\n")):
            if para.startswith(("   ", "[")) or "::=" in para or ">>>" in para:
                continue  # an indented block (grammar, code, a table) or a footnote
            text = " ".join(para.split())
            if not (MIN_WORDS <= len(text.split()) <= MAX_WORDS) or re.fullmatch(r"[*=\-]+", text.split()[-1]):
                continue
            if text in seen:
                continue
            seen.add(text)
            out.append({"id": f"{topic}-{n}", "text": text})
    return out


SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"])")
QUOTED = re.compile(r'"(%s)"' % "|".join(KEYWORDS))


def questions(corpus):
    by_text = {}
    for p in corpus:
        for sentence in SENTENCE.split(p["text"]):
            # the first keyword named once: a second mention would give the answer away
            found = [k for k in QUOTED.findall(sentence) if sentence.count(f'"{k}"') == 1][:1]
            if not found:
                continue
            words = sentence.split()
            if len(words) < Q_MIN:
                continue
            at = next(i for i, w in enumerate(words) if f'"{found[0]}"' in w)
            if len(words) > Q_MAX:  # the Q_MAX words around the blank
                start = max(0, min(at - Q_MAX // 2, len(words) - Q_MAX))
                words = words[start:start + Q_MAX]
                at -= start
            words[at] = words[at].replace(f'"{found[0]}"', '"___"')
            question = " ".join(words)
            by_text.setdefault(question, {"question": question, "answer": found[0], "sources": []})
    rows = []
    for row in by_text.values():
        original = row["question"].replace('"___"', f'"{row["answer"]}"')
        row["sources"] = [p["id"] for p in corpus if original in p["text"]]
        rows.append(row)
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--topics", help="CPython 3.11.7's Lib/pydoc_data/topics.py (default: this interpreter's)")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent.parent / "data"))
    args = ap.parse_args()
    if args.topics is None:
        import pydoc_data.topics as module
        args.topics = module.__file__
    corpus = passages(load_topics(args.topics))
    rows = questions(corpus)
    random.Random(SEED).shuffle(rows)
    need = sum(n for _, n in SPLITS)
    if len(rows) < need:
        sys.exit(f"only {len(rows)} questions, {need} needed")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    def write(name, items):
        with open(out / f"{name}.jsonl", "w", encoding="utf-8", newline="\n") as f:
            for item in items:
                f.write(json.dumps(item, ensure_ascii=False) + "\n")

    write("passages", corpus)
    start = 0
    for name, n in SPLITS:
        write(name, rows[start:start + n])
        start += n
    print(f"{len(corpus)} passages, {len(rows)} questions ({', '.join(f'{n} {s}' for s, n in SPLITS)} kept) -> {out}")


if __name__ == "__main__":
    main()
