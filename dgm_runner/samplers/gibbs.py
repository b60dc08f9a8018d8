"""Block-Gibbs sampling from an RBM."""

from __future__ import annotations

import torch

from dgm_runner.config import Steps
from dgm_runner.distributions import sample_bernoulli
from dgm_runner.models.checks import require
from dgm_runner.models.rbm import RBM
from dgm_runner.samplers.base import Sampler


class GibbsSampler(Sampler):
    """Run ``steps`` block-Gibbs sweeps from uniform Bernoulli(0.5) noise and return the
    mean image ``p(v = 1 | h)`` of the last sweep (the usual way to show RBM samples).

    Args:
        steps: number of Gibbs sweeps per chain.
    """

    def __init__(self, steps: Steps = 1000) -> None:
        self.steps = steps

    def check_model(self, model: torch.nn.Module) -> None:
        require(model, RBM, "sampler 'gibbs'")

    @torch.no_grad()
    def sample(self, model: RBM, n: int, generator: torch.Generator) -> torch.Tensor:
        """Returns ``(n, C, H, W)`` probabilities in [0, 1] (``p(v = 1 | h)`` of the last
        sweep; ``n * steps`` Bernoulli draws of each layer come from ``generator``)."""
        device = model.W.device
        v = sample_bernoulli(torch.full((n, model.visible_dim), 0.5, device=device), generator)
        _, probs = model.gibbs_chain(v, self.steps, generator)
        return probs.reshape(n, *model.image_shape)
