"""The reward of rag_best_of.lmp: no gold answer, only what the context says."""


def quoted(context, question, answer):
    """1 when the retrieved context writes the keyword in double quotes, as the Language
    Reference writes every keyword it names (and so the sentence the question blanks)."""
    return f'"{answer}"' in " ".join(context)
