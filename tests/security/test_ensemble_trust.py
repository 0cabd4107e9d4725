"""lmpc.ensemble of loaded artifacts keeps their trust: the ensemble's default metric (member
1's, from its artifact) is checked like the member's own, so an artifact's Python metric never
runs without trust_code, whether the artifact is evaluated alone or in an ensemble."""

from __future__ import annotations

from pathlib import Path

import pytest

import lmpc
from lmpc.compiler import compile_source
from lmpc.compiler.artifact import ArtifactTrustError, make_artifact, write_artifact

PROGRAM = '''
signature S = text: str -> label: "a" | "b"
pipeline p(text: str) -> (label: "a" | "b") {
    s = predict S(text: text)
    return label: s.label
}
'''


def test_an_ensemble_does_not_run_an_untrusted_artifacts_metric(tmp_path: Path):
    marker = tmp_path / "ran"
    (tmp_path / "score.py").write_text(f"open({str(marker)!r}, 'w').close()\n"
                                       "def score(example, prediction):\n    return 1.0\n")
    checked = compile_source(PROGRAM, str(tmp_path / "s.lmp"))
    metric = {"kind": "python", "name": "score.py:score", "fields": [], "options": {}}
    out = tmp_path / "s.lmpc.json"
    write_artifact(out, make_artifact(checked, "p", {"p": checked.graphs["p"]}, out, {"metric": metric}, {}))
    members = [lmpc.load(out, cache=False, trace_log=False) for _ in range(2)]  # no call steps: no trust needed
    with lmpc.ensemble(members) as ens:
        assert ens.artifact is members[0].artifact
        with pytest.raises(ArtifactTrustError, match="score.py \\(the metric\\)"):
            lmpc.api.resolve_metric(ens)
    assert not marker.exists()

    trusted = [lmpc.load(out, trust_code=True, cache=False, trace_log=False) for _ in range(2)]
    with lmpc.ensemble(trusted) as ens:
        assert callable(lmpc.api.resolve_metric(ens))
    assert marker.exists()
