"""Models (one module per family; see ``configs/model``). Models never read config or files."""

from dgm_runner.models.dcgan import DCGAN
from dgm_runner.models.rbm import RBM
from dgm_runner.models.score import NoiseConditionalScoreMLP, ScoreUNet
from dgm_runner.models.unet import UNet
from dgm_runner.models.vae import VAECNN, VAEMLP, GaussianVAE, VAEConv

__all__ = [
    "DCGAN",
    "RBM",
    "VAEMLP",
    "VAECNN",
    "VAEConv",
    "GaussianVAE",
    "NoiseConditionalScoreMLP",
    "ScoreUNet",
    "UNet",
]
