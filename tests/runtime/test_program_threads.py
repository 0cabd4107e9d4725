"""One Program called from many threads at once, each batch with its own sample/temperature:
every request carries its own batch's settings, and every answer is cached under its own key."""

from __future__ import annotations

import json
import threading

import lmpc
from lmpc.runtime.cache import CallCache

from .stub_server import StubServer

ECHO = '''
model srv = openai(model: "stub", base_url: env("LMPC_TEST_BASE_URL"), seed: 100)
signature Echo = text -> answer: str
pipeline echo(text: str) -> (answer: str) {
    e = predict Echo(text: text)
    return answer: e.answer
}
'''

BATCHES = [(0, None), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.2), (5, 1.5)]  # (sample, temperature)


def settings(sample: int, temperature: float | None) -> str:
    return f"t={temperature if temperature is not None else 0.0} seed={100 + sample}"


def test_concurrent_batches_keep_their_own_decoding_settings(monkeypatch, tmp_path):
    # the server answers with the settings it received, so each answer shows what was sent
    reply = lambda body: json.dumps({"answer": f"t={body['temperature']} seed={body['seed']}"})  # noqa: E731
    with StubServer(reply, delay_s=0.05) as server:
        monkeypatch.setenv("LMPC_TEST_BASE_URL", server.base_url)
        prog = lmpc.compile_source(ECHO, cache=CallCache(tmp_path / "calls.sqlite"), trace_log=False)
        start = threading.Barrier(len(BATCHES))
        results: dict[int, list] = {}

        def run(sample: int, temperature: float | None) -> None:
            start.wait()
            rows = [{"text": f"batch {sample} row {i}"} for i in range(8)]
            results[sample] = prog.batch(rows, sample=sample, temperature=temperature)

        threads = [threading.Thread(target=run, args=b) for b in BATCHES]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

        assert len(server.requests) == 8 * len(BATCHES)
        for _, _, body in server.requests:  # each request went out with its own batch's settings
            sample = int(body["messages"][-1]["content"].split("batch ")[1].split()[0])
            temperature = dict(BATCHES)[sample]
            assert settings(sample, temperature) == f"t={body['temperature']} seed={body['seed']}"
        for sample, temperature in BATCHES:
            assert all(r.ok and r.answer == settings(sample, temperature) for r in results[sample])

        # the cache keys are right: running each batch again, alone, is all hits with its own answers
        for sample, temperature in BATCHES:
            again = prog.batch([{"text": f"batch {sample} row {i}"} for i in range(8)],
                               sample=sample, temperature=temperature)
            assert all(r.trace[0].cache_hit and r.answer == settings(sample, temperature) for r in again)
        assert len(server.requests) == 8 * len(BATCHES)
        prog.close()
