"""GAN objectives (issue 5): the gradient penalty's closed form, alternating updates that
touch only their own network, weight clipping, and smoke runs of every variant."""

import math

import pytest
import torch
from torch import nn

from dgm_runner.loop import train
from dgm_runner.models import DCGAN
from dgm_runner.objectives import Batch, GANObjective
from dgm_runner.objectives.gan import gradient_penalty
from tests.helpers import SMALL, needs_mnist


def test_gradient_penalty_of_a_linear_critic_is_closed_form():
    # D(x) = w.x + b has gradient w everywhere, so the penalty is (||w|| - 1)^2 exactly.
    critic = nn.Linear(12, 1)
    with torch.no_grad():
        critic.weight.copy_(torch.arange(12.0).reshape(1, 12) / 10)
    real, fake = torch.randn(32, 12), torch.randn(32, 12)
    gp = gradient_penalty(
        lambda x: critic(x).squeeze(1), real, fake, torch.Generator().manual_seed(0)
    )
    expected = (critic.weight.norm() - 1) ** 2
    torch.testing.assert_close(gp, expected.detach())
    gp.backward()  # differentiable w.r.t. the critic: d/dw (||w|| - 1)^2 = 2 (||w|| - 1) w / ||w||
    w = critic.weight.detach()
    torch.testing.assert_close(critic.weight.grad, 2 * (w.norm() - 1) * w / w.norm())


def _updates(loss: str, n_critic: int, steps: int):
    """Run the loop's protocol (zero grads, backward, step that group's optimiser) and
    record, per update, which parameters changed."""
    torch.manual_seed(0)
    model = DCGAN((1, 28, 28), latent_dim=8, g_channels=4, d_channels=4)
    objective = GANObjective(loss=loss, n_critic=n_critic)
    optimizers = {g: torch.optim.SGD(ps, lr=0.1) for g, ps in objective.param_groups(model).items()}
    batch = Batch(torch.rand(16, 1, 28, 28), torch.zeros(16, dtype=torch.long))
    log = []
    for step in range(steps):
        for group, value, terms in objective.steps(model, batch, step):
            before = {k: v.detach().clone() for k, v in model.named_parameters()}
            model.zero_grad(set_to_none=True)
            value.backward()
            optimizers[group].step()
            objective.after_step(group, model)
            changed = {k: not torch.equal(before[k], v) for k, v in model.named_parameters()}
            log.append((group, changed, terms))
    return log


@pytest.mark.parametrize("loss", ["minimax", "non_saturating", "wgan_gp", "wgan_clip"])
def test_each_update_changes_only_its_own_network(loss):
    seen = set()
    for group, changed, _ in _updates(loss, n_critic=1, steps=2):
        own = [c for name, c in changed.items() if name.startswith(group)]
        other = [c for name, c in changed.items() if not name.startswith(group)]
        assert any(own) and not any(other), group
        seen.add(group)
    assert seen == {"discriminator", "generator"}


def test_generator_steps_every_n_critic_batches():
    groups = [g for g, _, _ in _updates("wgan_gp", n_critic=3, steps=7)]
    assert groups.count("discriminator") == 7 and groups.count("generator") == 3  # steps 0, 3, 6


def test_minimax_and_non_saturating_generator_losses():
    model = DCGAN((1, 28, 28), latent_dim=4, g_channels=2, d_channels=2)
    fake = torch.rand(5, 1, 28, 28)
    d = torch.sigmoid(model.discriminate(fake))
    torch.testing.assert_close(GANObjective("minimax")._g_loss(model, fake), torch.log(1 - d))
    torch.testing.assert_close(GANObjective("non_saturating")._g_loss(model, fake), -torch.log(d))


@needs_mnist
@pytest.mark.parametrize("loss", ["minimax", "non_saturating", "wgan_gp", "wgan_clip"])
def test_gan_smoke_runs(compose_cfg, tmp_path, loss):
    cfg = compose_cfg(
        "experiment=gan_mnist",
        f"objective.loss={loss}",
        "objective.n_critic=2",
        *SMALL,
        "model.g_channels=8",
        "model.d_channels=8",
        "logger=none",
    )
    final = train(cfg, tmp_path)
    assert math.isfinite(final["test/d_loss"]) and math.isfinite(final["train/g_loss"])
    assert ("test/wasserstein" in final) == loss.startswith("wgan")
    if loss == "wgan_clip":
        ckpt = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
        d_params = [v for k, v in ckpt["model"].items() if k.startswith("discriminator")]
        assert max(float(v.abs().max()) for v in d_params) <= 0.01 + 1e-7
    assert set(
        torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)["optimizers"]
    ) == {"discriminator", "generator"}
    assert (tmp_path / "samples" / "final.png").is_file()
