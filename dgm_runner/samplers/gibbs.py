"""Block-Gibbs sampling from an RBM."""

from __future__ import annotations

import torch

from dgm_runner.config import Steps
from dgm_runner.distributions import sample_bernoulli
from dgm_runner.models.checks import require
from dgm_runner.models.rbm import RBM
from dgm_runner.progress import Bar
from dgm_runner.samplers.base import Sampler

#: Sweeps per :meth:`RBM.gibbs_chain` call between two updates of the progress bar.
_CHUNK = 10


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

    def describe(self) -> str:
        return f"gibbs {self.steps} sweeps"

    @torch.no_grad()
    def sample(self, model: RBM, n: int, generator: torch.Generator) -> torch.Tensor:
        """Returns ``(n, C, H, W)`` probabilities in [0, 1] (``p(v = 1 | h)`` of the last
        sweep; ``n * steps`` Bernoulli draws of each layer come from ``generator``)."""
        device = model.W.device
        v = sample_bernoulli(torch.full((n, model.visible_dim), 0.5, device=device), generator)
        # the chain in pieces of _CHUNK sweeps (the same draws as one call): a progress bar
        with Bar(self.steps, f"Gibbs sweeps ({n} chains)", "sweep") as bar:
            for done in range(0, self.steps, _CHUNK):
                k = min(_CHUNK, self.steps - done)
                v, probs = model.gibbs_chain(v, k, generator)
                bar.update(k)
        return probs.reshape(n, *model.image_shape)
