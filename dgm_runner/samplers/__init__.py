"""Samplers (see ``configs/sampler``): ``sample(model, n, generator) -> (n, C, H, W)``."""

from dgm_runner.samplers.ancestral import AncestralSampler
from dgm_runner.samplers.base import Sampler
from dgm_runner.samplers.diffusion import DDIM, DDPMAncestral, HeunODE
from dgm_runner.samplers.generator import GeneratorSampler
from dgm_runner.samplers.gibbs import GibbsSampler
from dgm_runner.samplers.score import AnnealedLangevin, EulerMaruyama, PredictorCorrector
from dgm_runner.samplers.solvers import RK45ODE, DPMSolverPP2M, EulerAncestral

__all__ = [
    "Sampler",
    "GibbsSampler",
    "AncestralSampler",
    "GeneratorSampler",
    "AnnealedLangevin",
    "EulerMaruyama",
    "PredictorCorrector",
    "DDPMAncestral",
    "DDIM",
    "HeunODE",
    "DPMSolverPP2M",
    "EulerAncestral",
    "RK45ODE",
]
