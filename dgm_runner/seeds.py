"""The named random streams of a run, all derived from ``trainer.seed``."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Seeds:
    """The seed of each random stream of a run with ``trainer.seed = base``.

    Each evaluation draws from its own freshly seeded generator, so a run's test metrics,
    grids and figures do not depend on how long it trained, and ``dgm-eval`` reproduces
    them from the run's config.

    Attributes:
        base: ``trainer.seed``: the weights' initialisation, the epoch permutations and the
            training's Monte Carlo draws (the global RNGs after ``seed_everything``).
    """

    base: int

    @property
    def test_metrics(self) -> int:
        """The Monte Carlo draws of the objective's test and validation metrics (ELBO's
        ``z``, IWAE's importance samples, the DSM noise): ``base + 1``."""
        return self.base + 1

    @property
    def grid(self) -> int:
        """The 8x8 sample grid of every evaluation: ``base + 2`` (the same noise each epoch,
        so the grids of a run show the same samples improving)."""
        return self.base + 2

    @property
    def figures(self) -> int:
        """The figures a run draws at its end (``cfg.figures``): ``base + 3``."""
        return self.base + 3

    @property
    def sample_metrics(self) -> int:
        """The samples of ``sample_metrics`` (FID, AIS, bits/dim, ...): ``base + 4``."""
        return self.base + 4
