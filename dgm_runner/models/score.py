"""Score networks: noise-conditional ``s(x, sigma)`` for 2-D data (Song & Ermon 2019) and a
time-conditional U-Net for images under a diffusion process (VE / VP SDE, discrete DDPM,
EDM; :mod:`dgm_runner.sdes`), with its parameterisation (:class:`DiffusionModel`)."""

from __future__ import annotations

import math
from typing import Annotated, Literal

import torch
from torch import nn

from dgm_runner.config import Component, PositiveFloat, PositiveInt
from dgm_runner.sdes import SDE, bcast


def geometric_sigmas(sigma_max: float, sigma_min: float, n_levels: int) -> torch.Tensor:
    """``(n_levels,)`` noise levels from ``sigma_max`` down to ``sigma_min``, geometrically
    spaced. Index 0 is the largest: Song & Ermon (2019) write sigma_1 > ... > sigma_L,
    the convention of seed 001's Algorithm 1 (its sigma_L is the smallest level)."""
    if not 0 < sigma_min < sigma_max:
        raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
    return torch.exp(torch.linspace(math.log(sigma_max), math.log(sigma_min), n_levels))


class NoiseConditionalScoreMLP(nn.Module):
    """``s_theta(x, sigma)`` for ``(B, D)`` points: an MLP on ``[x, log sigma]`` whose output
    is divided by sigma (the scaling of Song & Ermon 2020, "Improved techniques", sec. 3.3,
    which makes ``||s|| ~ 1/sigma`` as for the true score).

    Args:
        image_shape: ``(D,)`` (set by the runner).
        hidden_dim: width of the hidden layers.
        n_layers: number of hidden layers.
        sigma_min, sigma_max, n_levels: the geometric noise levels (buffer ``sigmas``,
            largest first), shared by the DSM objective and the annealed Langevin sampler.
    """

    def __init__(
        self,
        image_shape: tuple[int, ...],
        hidden_dim: PositiveInt = 128,
        n_layers: PositiveInt = 3,
        sigma_min: PositiveFloat = 0.01,
        sigma_max: PositiveFloat = 5.0,
        n_levels: PositiveInt = 10,
    ) -> None:
        super().__init__()
        if len(image_shape) != 1:
            raise ValueError(
                "NoiseConditionalScoreMLP needs (N, D) data, "
                f"got examples of shape {tuple(image_shape)}"
            )
        self.image_shape = tuple(image_shape)
        d = image_shape[0]
        self.register_buffer("sigmas", geometric_sigmas(sigma_max, sigma_min, n_levels))
        layers: list[nn.Module] = [nn.Linear(d + 1, hidden_dim), nn.SiLU()]
        for _ in range(n_layers - 1):
            layers += [nn.Linear(hidden_dim, hidden_dim), nn.SiLU()]
        layers.append(nn.Linear(hidden_dim, d))
        self.net = nn.Sequential(*layers)

    def score(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """``(B, D)`` points, ``(B,)`` noise levels -> ``(B, D)`` estimate of
        ``grad_x log q_sigma(x)``."""
        h = torch.cat([x, torch.log(sigma)[:, None]], dim=1)
        return self.net(h) / sigma[:, None]


class _ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, emb_dim: int, groups: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(min(groups, cin), cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb_dim, cout)
        self.norm2 = nn.GroupNorm(min(groups, cout), cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(self.act(self.norm1(x)))
        h = h + self.emb(emb)[:, :, None, None]
        h = self.conv2(self.act(self.norm2(h)))
        return h + self.skip(x)


def sinusoidal_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Transformer-style ``(B,) -> (B, dim)`` embedding of ``1000 t`` (Ho et al. 2020)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device) / half)
    args = 1000.0 * t[:, None] * freqs[None]
    return torch.cat([torch.sin(args), torch.cos(args)], dim=1)


class DiffusionModel(nn.Module):
    """What every diffusion sampler, objective and likelihood uses: a process ``sde``
    (:class:`dgm_runner.sdes.SDE`), the example shape, the data scaling, and a noise
    prediction :meth:`predict_noise`, from which the score and the denoiser follow:

    - ``score(x, t) = -predict_noise(x, t) / sigma(t)`` (Song et al. 2021, Eq. 7 with the
      sigma-scaling of Song & Ermon 2020, Sec. 3.3: ``s = net / sigma``),
    - ``denoise(x, t) = (x - sigma(t) predict_noise(x, t)) / alpha(t)``, the estimate of
      ``E[x_0 | x_t]``.

    Models run in *model space*: :meth:`encode` maps data in [0, 1] there (``2 x - 1``
    when ``centered``, as Ho et al. 2020 scale to [-1, 1]; else the identity) and
    :meth:`decode` maps back. ``log_det_encode`` is ``log |d encode / dx|`` per dimension
    (``log 2`` or 0), used by the bits/dim of :mod:`dgm_runner.metrics.likelihood`.
    ``sigma_data`` is EDM's data std (Karras et al. 2022), the one value that EDM
    preconditioning and the EDM loss weighting of
    :class:`~dgm_runner.objectives.dsm.DiffusionDSM` use (0.5 unless a subclass sets it).
    Subclasses set ``sde``, ``image_shape``, ``centered`` and implement :meth:`predict_noise`.
    """

    sde: SDE
    image_shape: tuple[int, ...]
    centered: bool = False
    sigma_data: float = 0.5

    def predict_noise(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``(B, ...)`` states at times ``(B,)`` -> ``(B, ...)`` predicted noise."""
        raise NotImplementedError

    def score(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``(B, ...)`` estimate of ``grad_x log p_t(x)``."""
        return -self.predict_noise(x, t) / bcast(self.sde.sigma(t), x)

    def denoise(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``(B, ...)`` estimate of ``x_0`` (model space) from ``x_t``."""
        return self.predict_noise_and_x0(x, t)[1]

    def predict_noise_and_x0(
        self, x: torch.Tensor, t: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One network evaluation -> ``(eps_hat, x0_hat)`` estimates, both ``(B, ...)``."""
        eps_hat = self.predict_noise(x, t)
        return eps_hat, (x - bcast(self.sde.sigma(t), x) * eps_hat) / bcast(self.sde.alpha(t), x)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Data in [0, 1] -> model space."""
        return 2.0 * x - 1.0 if self.centered else x

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        """Model space -> data space (nominally [0, 1]; not clamped)."""
        return (x + 1.0) / 2.0 if self.centered else x

    @property
    def log_det_encode(self) -> float:
        """``log |d encode / dx|`` per dimension (nats)."""
        return math.log(2.0) if self.centered else 0.0


class ScoreUNet(DiffusionModel):
    """Time-conditional U-Net for ``(B, C, H, W)`` images with H, W divisible by 4
    (MNIST: 28 -> 14 -> 7), GroupNorm + SiLU residual blocks, a sinusoidal time embedding
    and skip connections, under the diffusion process ``sde``. With channels
    (32, 64, 128) it has 0.93 M parameters; (16, 32, 64) has 0.27 M.

    Parameterisations (``preconditioning``):

    - ``none``: the network ``F`` predicts the noise, ``eps_hat = F(x, 1000 t)``; equivalently the
      sigma-scaled score ``s = -F / sigma`` (Song & Ermon 2020; NCSN++'s ``scale_by_sigma``
      for VE) and, under a :class:`~dgm_runner.sdes.DiscreteDDPM` (``model/sde=ddpm``), Ho
      et al.'s epsilon-prediction (2020, Eq. 14).
    - ``edm``: Karras et al. (2022, Table 1) preconditioning of the rescaled state
      ``x_hat = x / alpha`` at noise level ``s = sigma / alpha``:
      ``D(x_hat; s) = c_skip x_hat + c_out F(c_in x_hat, c_noise)`` with
      ``c_skip = sd^2 / (s^2 + sd^2)``, ``c_out = s sd / sqrt(s^2 + sd^2)``,
      ``c_in = 1 / sqrt(s^2 + sd^2)``, ``c_noise = log(s) / 4`` (``sd = sigma_data``);
      ``eps_hat = (x_hat - D) / s``.

    Args:
        image_shape: ``(C, H, W)`` (set by the runner).
        sde: the diffusion process, a built :class:`~dgm_runner.sdes.SDE`: in a config the
            nested node ``model.sde`` of the group ``model/sde`` (``configs/model/sde/``:
            ``ve``, ``vp`` (Song et al. 2021), ``ddpm`` (Ho et al. 2020), ``edm`` (Karras et
            al. 2022)), each with its own numbers, which Hydra builds first.
        channels: widths at the three resolutions.
        emb_dim: time-embedding width.
        groups: GroupNorm groups.
        preconditioning: ``none`` or ``edm`` (above).
        sigma_data: EDM's data std (0.5 for images in [-1, 1]); the one value of it in a
            run: EDM preconditioning here and the EDM loss weighting of
            :class:`~dgm_runner.objectives.dsm.DiffusionDSM` read it from the model.
        centered: run on ``2 x - 1`` (data in [-1, 1]) instead of [0, 1].

    Raises:
        ValueError: images not ``(C, H, W)`` with H, W divisible by 4, or not 3 widths.
        TypeError: ``sde`` is not an :class:`~dgm_runner.sdes.SDE` (e.g. the name ``"edm"``
            of the form before issue 27: select it with ``model/sde=edm``).
    """

    def __init__(
        self,
        image_shape: tuple[int, ...],
        sde: Annotated[SDE, Component("model/sde")],
        channels: tuple[int, int, int] = (32, 64, 128),
        emb_dim: PositiveInt = 128,
        groups: PositiveInt = 8,
        preconditioning: Literal["none", "edm"] = "none",
        sigma_data: PositiveFloat = 0.5,
        centered: bool = False,
    ) -> None:
        super().__init__()
        if len(image_shape) != 3 or image_shape[1] % 4 or image_shape[2] % 4:
            raise ValueError(
                "ScoreUNet needs (C, H, W) images with H, W divisible by 4, "
                f"got {tuple(image_shape)}"
            )
        if len(channels) != 3:
            raise ValueError(f"ScoreUNet needs 3 channel widths, got {list(channels)}")
        if not isinstance(sde, SDE):
            raise TypeError(
                f"ScoreUNet's sde must be a diffusion process (dgm_runner.sdes.SDE), got "
                f"{sde!r}: select one with model/sde=ve|vp|ddpm|edm"
            )
        self.image_shape = tuple(image_shape)
        self.sde = sde
        self.preconditioning, self.sigma_data, self.centered = preconditioning, sigma_data, centered
        c0, c1, c2 = channels
        cin = image_shape[0]
        self.emb_dim = emb_dim
        self.time_mlp = nn.Sequential(
            nn.Linear(emb_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim)
        )
        self.conv_in = nn.Conv2d(cin, c0, 3, padding=1)
        self.down0 = _ResBlock(c0, c0, emb_dim, groups)
        self.pool0 = nn.Conv2d(c0, c0, 3, stride=2, padding=1)
        self.down1 = _ResBlock(c0, c1, emb_dim, groups)
        self.pool1 = nn.Conv2d(c1, c1, 3, stride=2, padding=1)
        self.mid1 = _ResBlock(c1, c2, emb_dim, groups)
        self.mid2 = _ResBlock(c2, c2, emb_dim, groups)
        self.up1 = nn.ConvTranspose2d(c2, c1, 2, stride=2)
        self.dec1 = _ResBlock(2 * c1, c1, emb_dim, groups)
        self.up0 = nn.ConvTranspose2d(c1, c0, 2, stride=2)
        self.dec0 = _ResBlock(2 * c0, c0, emb_dim, groups)
        self.conv_out = nn.Sequential(
            nn.GroupNorm(min(groups, c0), c0), nn.SiLU(), nn.Conv2d(c0, cin, 3, padding=1)
        )

    def network(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """The raw U-Net ``F``: ``(B, C, H, W)`` input, ``(B,)`` conditioning (embedded as
        ``sinusoidal_embedding(cond)``, i.e. of ``1000 cond``) -> ``(B, C, H, W)``."""
        emb = self.time_mlp(sinusoidal_embedding(cond, self.emb_dim))
        h0 = self.down0(self.conv_in(x), emb)
        h1 = self.down1(self.pool0(h0), emb)
        h = self.mid2(self.mid1(self.pool1(h1), emb), emb)
        h = self.dec1(torch.cat([self.up1(h), h1], dim=1), emb)
        h = self.dec0(torch.cat([self.up0(h), h0], dim=1), emb)
        return self.conv_out(h)

    def predict_noise(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` noisy images (model space) at times ``(B,)`` -> predicted noise."""
        if self.preconditioning == "none":
            return self.network(x, t)
        alpha = bcast(self.sde.alpha(t), x)
        s = self.sde.sigma_hat(t)
        x_hat = x / alpha
        sd2 = self.sigma_data**2
        c_skip = sd2 / (s**2 + sd2)
        c_out = s * self.sigma_data / torch.sqrt(s**2 + sd2)
        c_in = 1.0 / torch.sqrt(s**2 + sd2)
        f = self.network(bcast(c_in, x) * x_hat, torch.log(s) / 4.0)
        # eps_hat = (x_hat - D) / s with D = c_skip x_hat + c_out F
        return (bcast((1.0 - c_skip) / s, x) * x_hat) - bcast(c_out / s, x) * f
