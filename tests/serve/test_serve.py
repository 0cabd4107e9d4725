"""`lmpc serve` started by the test on 127.0.0.1 (a real subprocess, the embedded SmolLM2 model):
typed requests, the OpenAPI page, 4xx for malformed requests naming the field, a failing row's
error body, 100 concurrent requests gathered into batches whose shared prompt prefix is
evaluated a few times only, and SIGTERM during load (no answered request lost)."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from lmpc.cli import main
from lmpc.compiler.api import compile_source
from lmpc.compiler.artifact import make_artifact, write_artifact

from .server import DATA, PROGRAM, Served

pytestmark = pytest.mark.slow

LABELS = {"positive", "negative"}


def build_artifact(folder: Path) -> Path:
    """review.lmp as a built artifact (no demos) beside its guard.py: it runs Python, so serving
    it needs --trust-code."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("review.lmp", "guard.py"):
        shutil.copy(DATA / name, folder / name)
    checked = compile_source((folder / "review.lmp").read_text(), str(folder / "review.lmp"))
    out = folder / "review.lmpc.json"
    write_artifact(out, make_artifact(checked, "review", {"review": checked.graphs["review"]}, out, {}, {}))
    return out


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    artifact = build_artifact(root / "artifact")
    with Served(root / "cache", "--trust-code", "--batch-window-ms", "20", "--max-batch", "64",
                program=artifact) as s:
        yield s


def test_typed_request_is_answered_with_the_pipelines_outputs(served):
    status, body = served.request("POST", "/run", {"text": "Great phone, fast delivery, I love it!"})
    assert status == 200, body
    assert set(body["outputs"]) == {"label"} and body["outputs"]["label"] in LABELS
    assert body["batch"]["size"] >= 1 and body["batch"]["id"]
    assert len(body["trace_ids"]) == 2  # the guard's call and the model call
    # an optional input may be given or left out
    status, body = served.request("POST", "/run", {"text": "Broke after a day.", "stars": 1})
    assert status == 200 and body["outputs"]["label"] in LABELS, body
    status, body = served.request("POST", "/batch", {"rows": [{"text": "Superb quality."}, {"text": "Refund please."}]})
    assert status == 200, body
    assert body["failed"] == 0 and [set(r["outputs"]) for r in body["results"]] == [{"label"}, {"label"}]


def test_openapi_documents_the_programs_types(served):
    status, api = served.request("GET", "/openapi.json")
    assert status == 200, api
    schemas = api["components"]["schemas"]
    inputs, outputs = schemas["ReviewInputs"], schemas["ReviewOutputs"]
    assert inputs["properties"]["text"]["type"] == "string" and inputs["required"] == ["text"]
    assert {"type": "integer"} in inputs["properties"]["stars"]["anyOf"]
    assert outputs["properties"]["label"]["enum"] == ["positive", "negative"]
    run = api["paths"]["/run"]["post"]
    assert run["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/ReviewInputs")
    assert {"200", "422", "500", "502"} <= set(run["responses"])
    status, page = served.request("GET", "/docs")
    assert status == 200 and "swagger" in page.lower()


@pytest.mark.parametrize("body, raw, field, words", [
    ({"text": 5}, None, "text", "valid string"),
    ({"text": "ok", "stars": "five"}, None, "stars", "valid integer"),
    ({"txt": "hello"}, None, "text", "Field required"),
    ({"text": "ok", "colour": "red"}, None, "colour", "Extra inputs are not permitted"),
    (None, b'{"text": ', "the request body", "JSON"),
    (None, b"[1, 2]", "the request body", "valid dictionary"),
])
def test_a_malformed_request_is_a_422_naming_the_field(served, body, raw, field, words):
    before = served.metrics()["rejected"]
    status, answer = served.request("POST", "/run", body, raw=raw)
    assert status == 422, answer
    fields = {f["field"]: f["message"] for f in answer["fields"]}
    assert field in fields and words in fields[field], answer
    assert f"`{field}`" in answer["error"] or len(fields) > 1
    assert served.metrics()["rejected"] == before + 1
    assert served.request("GET", "/health")[0] == 200  # still serving


def test_a_malformed_row_of_a_batch_names_its_index(served):
    status, answer = served.request("POST", "/batch", {"rows": [{"text": "fine"}, {"text": ["a"]}]})
    assert status == 422, answer
    assert answer["fields"][0]["field"] == "rows[1].text", answer


def test_a_failing_row_gets_lmpcs_error_and_the_others_go_on(served):
    status, body = served.request("POST", "/run", {"text": "boom"})
    assert status == 500, body
    assert "the guard refuses this text" in body["error"] and "ValueError" in body["error"], body
    assert body["step"] == "g" and "Traceback" not in json.dumps(body)
    status, body = served.request("POST", "/batch", {"rows": [{"text": "boom"}, {"text": "Works well."}]})
    assert status == 200 and body["failed"] == 1, body
    bad, good = body["results"]
    assert bad["outputs"] is None and "guard refuses" in bad["error"]
    assert good["error"] is None if "error" in good else True
    assert good["outputs"]["label"] in LABELS
    assert served.request("GET", "/health")[0] == 200


def test_100_concurrent_requests_are_gathered_and_share_the_prompt_prefix(served):
    before = served.metrics()
    texts = [f"Review {i}: the {('blender', 'kettle', 'lamp', 'chair')[i % 4]} was {('fine', 'bad', 'great', 'late')[i % 4]}."
             for i in range(100)]
    with ThreadPoolExecutor(100) as pool:
        answers = list(pool.map(lambda t: served.request("POST", "/run", {"text": t}), texts))
    assert [status for status, _ in answers] == [200] * 100, [a for a in answers if a[0] != 200][:3]
    assert all(body["outputs"]["label"] in LABELS for _, body in answers)

    # the trace: every model call carries its batch id and size, and the batches gathered them
    ids = {tid for _, body in answers for tid in body["trace_ids"]}
    calls = [e for e in served.traces() if e["trace_id"] in ids and e["model"]]
    assert len(calls) == 100
    batches = Counter(e["extra"]["batch"]["id"] for e in calls)
    sizes = {e["extra"]["batch"]["id"]: e["extra"]["batch"]["size"] for e in calls}
    assert all(batches[b] <= sizes[b] for b in batches)  # a batch's calls are its own rows'
    assert len(batches) <= 25 and max(sizes.values()) >= 8, sizes  # 100 requests in a few batches

    # The shared prefix (the signature's long instructions) is evaluated a few times, not 100:
    # each prompt is its prefix P and its own text; evaluated = k*P + the texts (+ the grid's
    # rounding), so k <= N - (prompt tokens - evaluated) / P, and P < the shortest prompt.
    after = served.metrics()
    prompt = sum(e["prompt_tokens"] for e in calls if not e["cache_hit"])
    evaluated = after["prompt_tokens_evaluated"] - before["prompt_tokens_evaluated"]
    assert after["prompt_tokens"] - before["prompt_tokens"] == prompt
    shortest = min(e["prompt_tokens"] for e in calls)
    assert shortest > 150, shortest  # the prefix is most of each prompt
    k = len(calls) - (prompt - evaluated) / shortest
    print(f"\n100 requests: {len(batches)} batches (sizes {sorted(Counter(sizes.values()).items())}); "
          f"prompt tokens {prompt}, evaluated {evaluated}; prefix evaluated at most {k:.1f} times")
    assert evaluated < prompt / 3, (evaluated, prompt)
    assert k <= 15, (k, evaluated, prompt, shortest)

    # the metrics saw them
    assert after["requests"] - before["requests"] == 100
    assert after["rows_ok"] - before["rows_ok"] == 100 and after["in_flight"] == 0
    assert after["calls"] - before["calls"] == 100
    assert after["batches"] - before["batches"] == len(batches)
    assert after["latency_s"]["p50"] <= after["latency_s"]["p95"] <= after["latency_s"]["p99"]
    status, text = served.request("GET", "/metrics?format=prometheus")
    assert status == 200 and "lmpc_serve_requests_total" in text and 'lmpc_serve_latency_s{quantile="0.95"}' in text


def test_sigterm_during_load_finishes_the_requests_in_flight(tmp_path):
    with Served(tmp_path / "cache", "--batch-window-ms", "5", "--max-batch", "4", "--grace", "120") as s:
        n = 24
        with ThreadPoolExecutor(n) as pool:
            futures = [pool.submit(s.request, "POST", "/run", {"text": f"Item {i} arrived broken."}) for i in range(n)]
            deadline = time.monotonic() + 120
            while True:  # every request received, some answered, most still waiting
                m = s.metrics()
                if m["requests"] >= n and m["rows_ok"] >= 2:
                    break
                assert time.monotonic() < deadline, m
                time.sleep(0.05)
            assert m["in_flight"] > 0, m  # (/metrics is not counted in requests)
            s.proc.send_signal(signal.SIGTERM)
            time.sleep(0.5)
            with pytest.raises(OSError):  # no new connections
                socket.create_connection(("127.0.0.1", int(s.url.rsplit(":", 1)[1])), timeout=2).close()
            answers = [f.result() for f in futures]
        rc = s.wait(120)
    assert rc == 0, s.stderr
    assert [status for status, _ in answers] == [200] * n, answers
    assert "finishing" in s.stderr and f"stopped; served {n} request(s)" in s.stderr, s.stderr
    logged = {e["trace_id"] for e in s.traces()}
    assert all(set(body["trace_ids"]) <= logged for _, body in answers)  # each answer's calls are in the log
    assert "Traceback" not in s.stderr


def test_a_second_signal_exits_at_once(tmp_path):
    with Served(tmp_path / "cache", "--max-batch", "2", "--grace", "300") as s:
        with ThreadPoolExecutor(16) as pool:
            futures = [pool.submit(s.request, "POST", "/run", {"text": f"Row {i} is fine."}, timeout=60) for i in range(16)]
            deadline = time.monotonic() + 120
            while s.metrics()["requests"] < 16:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            s.proc.send_signal(signal.SIGTERM)
            time.sleep(0.3)
            sent = time.monotonic()
            s.proc.send_signal(signal.SIGTERM)
            rc = s.wait(30)
            took = time.monotonic() - sent
            for f in futures:
                f.exception()
    assert rc == 128 + signal.SIGTERM, s.stderr
    assert took < 5, took
    assert "exiting now" in s.stderr and "Traceback" not in s.stderr


def test_usage_errors_exit_2(tmp_path, capsys):
    artifact = build_artifact(tmp_path / "a")
    assert main(["serve", str(artifact)]) == 2  # runs Python: refused without --trust-code
    assert "--trust-code" in capsys.readouterr().err
    assert main(["serve", str(PROGRAM), "--pipeline", "nope"]) == 2
    assert "nope" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["serve", str(PROGRAM), "--max-batch", "0"])
    assert e.value.code == 2
    assert main(["serve", str(PROGRAM), "--grace", "-1"]) == 2
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    try:
        port = busy.getsockname()[1]
        assert main(["serve", str(PROGRAM), "--no-warmup", "--port", str(port), "--cache-dir", str(tmp_path)]) == 2
        assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err
    finally:
        busy.close()


def test_a_gathered_batch_decodes_together_on_the_batched_engine(tmp_path):
    with Served(tmp_path / "cache", "--batch-window-ms", "200", program=DATA / "batched.lmp") as s:
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda i: s.request("POST", "/run", {"text": f"Thing {i} is good."}), range(8)))
        assert [status for status, _ in answers] == [200] * 8, answers
        m = s.metrics()
    engine = m["models"]["local"]
    assert m["max_batch_size"] >= 2, m
    # the engine's public counters (batch_engine.py): one decoding step served several calls
    assert engine["engine_widest"] >= 2, engine


def test_ctrl_c_stops_serving_with_exit_130(tmp_path):
    with Served(tmp_path / "cache", "--no-warmup") as s:
        assert s.request("GET", "/health") == (200, {"status": "ok", "pipeline": "review", "in_flight": 0,
                                                      "batches_running": 0})
        s.proc.send_signal(signal.SIGINT)
        rc = s.wait(60)
    assert rc == 130, s.stderr
    assert "lmpc: interrupted; served 0 request(s)" in s.stderr and "Traceback" not in s.stderr


def test_when_the_grace_period_runs_out_it_exits_1_without_waiting(tmp_path):
    with Served(tmp_path / "cache", "--max-batch", "1", "--grace", "0.5") as s:
        n = 12
        with ThreadPoolExecutor(n) as pool:
            futures = [pool.submit(s.request, "POST", "/run", {"text": f"Row {i} is broken."}, timeout=60)
                       for i in range(n)]
            deadline = time.monotonic() + 120
            while s.metrics()["requests"] < n:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            s.proc.send_signal(signal.SIGTERM)
            rc = s.wait(30)
            statuses = [f.result()[0] for f in futures if f.exception() is None]
    assert rc == 1, s.stderr
    assert "grace period (0.5 s) ran out with" in s.stderr and "unanswered" in s.stderr, s.stderr
    # the rest: 503 (retry) or the connection closed, never a wrong answer
    assert statuses.count(200) < n and set(statuses) <= {200, 503}, statuses
    assert "Traceback" not in s.stderr, s.stderr


def test_without_the_serve_extra_it_says_what_to_install(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # as if uvicorn were not installed
    assert main(["serve", str(PROGRAM)]) == 2
    assert "pip install 'lmpc[serve]'" in capsys.readouterr().err
