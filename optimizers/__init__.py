"""lmpc.optimizers: strategies that rewrite a pipeline graph's prompt nodes (instructions, demos).

REGISTRY maps each implemented strategy's name (as written in an `optimize` block) to its class.
"""

from lmpc.optimizers.base import Candidate, OptimizeContext, Optimizer, OptimizerConfigError, OptimizeResult
from lmpc.optimizers.bayesian import Bayesian
from lmpc.optimizers.bootstrap import BootstrapFewShot, TeacherBrokenError
from lmpc.optimizers.ensemble import Ensemble
from lmpc.optimizers.finetune import Finetune
from lmpc.optimizers.knn import KNNFewShot
from lmpc.optimizers.labeled import LabeledFewShot
from lmpc.optimizers.random_search import RandomSearch

REGISTRY: dict[str, type[Optimizer]] = {
    cls.name: cls for cls in (LabeledFewShot, BootstrapFewShot, RandomSearch, Bayesian, KNNFewShot, Ensemble, Finetune)
}

__all__ = [
    "REGISTRY",
    "Bayesian",
    "BootstrapFewShot",
    "Candidate",
    "Ensemble",
    "Finetune",
    "KNNFewShot",
    "LabeledFewShot",
    "OptimizeContext",
    "OptimizeResult",
    "Optimizer",
    "OptimizerConfigError",
    "RandomSearch",
    "TeacherBrokenError",
]
