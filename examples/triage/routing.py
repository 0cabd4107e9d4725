"""The Python side of triage.lmp: `route = call "routing.py:assign_queue" Route(...)`.

A `call` step passes the signature's inputs as keyword arguments and takes the outputs
from the returned dict (or the bare value, when the signature has one output).
"""

QUEUES = {
    "bug": "engineering",
    "billing": "billing",
    "account": "accounts",
    "feature_request": "product",
    "other": "general",
}


def assign_queue(category: str, priority: str, tier: str) -> dict:
    queue = QUEUES.get(category, "general")
    if priority == "urgent" or (tier == "enterprise" and priority == "high"):
        queue += "-escalations"
    return {"queue": queue}
