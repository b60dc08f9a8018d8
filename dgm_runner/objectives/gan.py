"""GAN objectives with alternating discriminator / generator updates: minimax and
non-saturating (Goodfellow et al. 2014), WGAN with weight clipping (Arjovsky et al. 2017)
and WGAN-GP (Gulrajani et al. 2017)."""

from __future__ import annotations

from typing import Iterator, Literal

import torch
import torch.nn.functional as F
from torch import nn

from dgm_runner.config import NonNegativeFloat, PositiveFloat, PositiveInt
from dgm_runner.distributions import batch_draw
from dgm_runner.models.checks import require_attrs
from dgm_runner.objectives.base import Batch, Objective

GanLoss = Literal["minimax", "non_saturating", "wgan_gp", "wgan_clip"]


def gradient_penalty(
    critic: nn.Module | callable,
    real: torch.Tensor,
    fake: torch.Tensor,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """WGAN-GP penalty ``E[(||grad_x D(x_hat)||_2 - 1)^2]`` at ``x_hat = e x + (1 - e) x~``,
    ``e ~ U[0, 1]`` per example (Gulrajani et al. 2017, Algorithm 1, lines 6-7).

    Args:
        critic: ``(B, ...) -> (B,)``.
        real, fake: ``(B, ...)`` batches (fake detached from the generator).

    Returns:
        Scalar penalty (before the weight lambda), differentiable w.r.t. the critic.
    """
    ones = [1] * (real.ndim - 1)
    e = batch_draw(
        real.shape[0], lambda m: torch.rand(m, *ones, generator=generator, device=real.device)
    )
    x_hat = (e * real + (1 - e) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(x_hat).sum(), x_hat, create_graph=True)
    return (grad.flatten(1).norm(dim=1) - 1).pow(2).mean()


class GANObjective(Objective):
    """Alternating updates on each batch: a discriminator (critic) step, then, every
    ``n_critic`` batches, a generator step on fresh z (declared through :meth:`steps`).

    * ``minimax``: D maximises ``E log D(x) + E log(1 - D(G(z)))``; G minimises
      ``E log(1 - D(G(z)))`` (Goodfellow et al. 2014, Eq. 1; saturates early on).
    * ``non_saturating``: G maximises ``E log D(G(z))`` instead (their sec. 3).
    * ``wgan_clip``: critic maximises ``E D(x) - E D(G(z))`` with weights clipped to
      ``[-clip, clip]`` after each critic step (Arjovsky et al. 2017, Algorithm 1).
    * ``wgan_gp``: same critic loss plus ``gp_weight`` x :func:`gradient_penalty`.

    Logged terms: ``d_loss``, ``g_loss`` and, for WGANs, ``wasserstein`` = ``E D(x) -
    E D(G(z))`` (the critic's estimate, up to the Lipschitz constant).

    Args:
        loss: the GAN variant.
        n_critic: discriminator steps per generator step (WGAN papers: 5).
        gp_weight: lambda of the gradient penalty (10 in Gulrajani et al.).
        clip: weight-clipping bound for ``wgan_clip`` (0.01 in Arjovsky et al.).
    """

    updates_through_loss = False  # alternating D and G updates, the WGAN-GP double backward

    def __init__(
        self,
        loss: GanLoss = "non_saturating",
        n_critic: PositiveInt = 1,
        gp_weight: NonNegativeFloat = 10.0,
        clip: PositiveFloat = 0.01,
    ) -> None:
        self.kind, self.n_critic, self.gp_weight, self.clip = loss, n_critic, gp_weight, clip
        self.wgan = loss.startswith("wgan")
        self.monitor = "wasserstein" if self.wgan else "g_loss"

    def check_model(self, model: nn.Module) -> None:
        require_attrs(
            model,
            ("generator", "discriminator", "generate", "discriminate", "latent_dim"),
            "objective 'gan'",
        )

    def param_groups(self, model: nn.Module) -> dict[str, list[nn.Parameter]]:
        return {
            "discriminator": list(model.discriminator.parameters()),
            "generator": list(model.generator.parameters()),
        }

    def _z(self, model, n: int, device, generator=None) -> torch.Tensor:
        d = model.latent_dim  # per-example draws: a data-parallel shard gets its rows
        return batch_draw(n, lambda m: torch.randn(m, d, generator=generator, device=device))

    def _d_terms(self, model, real: torch.Tensor, fake: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-example discriminator loss (and Wasserstein estimate), ``(B,)`` each."""
        d_real, d_fake = model.discriminate(real), model.discriminate(fake)
        if self.wgan:
            return {"d_loss": d_fake - d_real, "wasserstein": d_real - d_fake}
        # -log D(x) - log(1 - D(x~)) from logits
        return {"d_loss": F.softplus(-d_real) + F.softplus(d_fake)}

    def _g_loss(self, model, fake: torch.Tensor) -> torch.Tensor:
        """Per-example generator loss ``(B,)``."""
        logits = model.discriminate(fake)
        if self.wgan:
            return -logits
        if self.kind == "minimax":
            return -F.softplus(logits)  # log(1 - D(G(z))) = -softplus(logit)
        return F.softplus(-logits)  # -log D(G(z))

    def steps(
        self, model, batch: Batch, step: int
    ) -> Iterator[tuple[str, torch.Tensor, dict[str, torch.Tensor]]]:
        real = batch.x
        fake = model.generate(self._z(model, real.shape[0], real.device)).detach()
        terms = {k: v.mean() for k, v in self._d_terms(model, real, fake).items()}
        d_loss = terms["d_loss"]
        if self.kind == "wgan_gp":
            gp = gradient_penalty(model.discriminate, real, fake)
            d_loss = d_loss + self.gp_weight * gp
            terms["gradient_penalty"] = gp
        yield "discriminator", d_loss, {k: v.detach() for k, v in terms.items()}
        if step % self.n_critic == 0:
            g_loss = self._g_loss(
                model, model.generate(self._z(model, real.shape[0], real.device))
            ).mean()
            yield "generator", g_loss, {"g_loss": g_loss.detach()}

    def after_step(self, group: str, model: nn.Module) -> None:
        if group == "discriminator" and self.kind == "wgan_clip":
            with torch.no_grad():
                for p in model.discriminator.parameters():
                    p.clamp_(-self.clip, self.clip)

    def loss(self, model, batch: Batch):
        raise TypeError("GANObjective has no single loss: the loop uses steps()")

    def evaluate(
        self, model, batch: Batch, generator=None, final: bool = False
    ) -> dict[str, torch.Tensor]:
        """On test images and as many generated ones: per-example ``d_loss``, ``g_loss``
        (and ``wasserstein`` for WGANs)."""
        fake = model.generate(self._z(model, batch.x.shape[0], batch.x.device, generator))
        return {**self._d_terms(model, batch.x, fake), "g_loss": self._g_loss(model, fake)}
