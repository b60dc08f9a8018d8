"""Training objectives (see ``configs/objective``): ``loss(model, batch) -> (scalar, terms)``."""

from dgm_runner.objectives.base import Batch, Objective
from dgm_runner.objectives.cd import ContrastiveDivergence
from dgm_runner.objectives.dsm import DenoisingScoreMatching, DiffusionDSM
from dgm_runner.objectives.elbo import ELBO
from dgm_runner.objectives.gan import GANObjective
from dgm_runner.objectives.iwae import IWAE

__all__ = [
    "Batch",
    "Objective",
    "ContrastiveDivergence",
    "DiffusionDSM",
    "DenoisingScoreMatching",
    "ELBO",
    "GANObjective",
    "IWAE",
]
