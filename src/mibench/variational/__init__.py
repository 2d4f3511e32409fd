"""Neural variational MI estimators: stacked critics, bounds, and the one training loop they share.

Import cost: this package imports torch; :mod:`mibench.estimators.neural` (the registered estimators)
imports it lazily, so listing estimators stays cheap. See ``docs/neural.md``.
"""

from mibench.variational.bounds import BOUNDS, Bound
from mibench.variational.critics import CRITICS, CriticSpec, init_params, scores
from mibench.variational.fit import (
    Cell,
    CellResult,
    CriticStack,
    StackAdam,
    TrainConfig,
    TrainingDiverged,
    batch_sizes,
    fit_cells,
    smooth,
)

__all__ = [
    "BOUNDS",
    "CRITICS",
    "Bound",
    "Cell",
    "CellResult",
    "CriticSpec",
    "CriticStack",
    "StackAdam",
    "TrainConfig",
    "TrainingDiverged",
    "batch_sizes",
    "fit_cells",
    "init_params",
    "scores",
    "smooth",
]
