"""Normalizing flows (RealNVP, Glow): exact densities of dequantized images by the change of
variables, one module per concern (layers, networks, preprocessing, multi-scale model).
See ``docs/families/flows.md``."""

from dgm_runner.models.flows.actnorm import ActNorm, data_dependent_init
from dgm_runner.models.flows.base import FlowLayer, FlowSequence, standard_normal_log_prob
from dgm_runner.models.flows.batchnorm import BatchNormFlow
from dgm_runner.models.flows.conv1x1 import InvertibleConv1x1
from dgm_runner.models.flows.coupling import AffineCoupling
from dgm_runner.models.flows.glow import Glow
from dgm_runner.models.flows.multiscale import ConditionalSplitPrior, MultiScaleFlow
from dgm_runner.models.flows.preprocessing import CenterTransform, LogitTransform
from dgm_runner.models.flows.realnvp import RealNVP
from dgm_runner.models.flows.squeeze import Squeeze

__all__ = [
    "ActNorm",
    "AffineCoupling",
    "BatchNormFlow",
    "CenterTransform",
    "ConditionalSplitPrior",
    "FlowLayer",
    "FlowSequence",
    "Glow",
    "InvertibleConv1x1",
    "LogitTransform",
    "MultiScaleFlow",
    "RealNVP",
    "Squeeze",
    "data_dependent_init",
    "standard_normal_log_prob",
]
