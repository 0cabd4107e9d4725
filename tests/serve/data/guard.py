"""The Python step of review.lmp: a row whose text is "boom" fails (a failing row's answer)."""


def guard(text: str, stars: int | None = None) -> str:
    if text == "boom":
        raise ValueError("the guard refuses this text")
    return text
