"""Score networks: noise-conditional ``s(x, sigma)`` for 2-D data (Song & Ermon 2019) and a
time-conditional network for images (the U-Net of :mod:`dgm_runner.models.unet`) under a
diffusion process (VE / VP SDE, discrete DDPM, EDM, the linear flow-matching path;
:mod:`dgm_runner.sdes`), with its parameterisation (noise, EDM or velocity;
:class:`DiffusionModel`)."""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Annotated, Any, Callable, Iterator, Literal

import torch
from torch import nn

from dgm_runner.config import Component, PositiveFloat, PositiveInt
from dgm_runner.models.unet import UNet
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


class DiffusionModel(nn.Module):
    """What every diffusion sampler, objective and likelihood uses: a process ``sde``
    (:class:`dgm_runner.sdes.SDE`), the example shape, the data scaling, and a prediction
    of either the noise or the velocity (``parameterization``), from which the rest follows.

    ``parameterization = "noise"`` (the default): :meth:`predict_noise` is the network's
    ``eps_hat = E[eps | x_t]`` and

    - ``score(x, t) = -predict_noise(x, t) / sigma(t)`` (Song et al. 2021, Eq. 7 with the
      sigma-scaling of Song & Ermon 2020, Sec. 3.3: ``s = net / sigma``),
    - ``denoise(x, t) = (x - sigma(t) predict_noise(x, t)) / alpha(t)``, the estimate of
      ``E[x_0 | x_t]``,
    - ``velocity(x, t) = f x - g^2 score / 2``, the probability-flow ODE's ``dx/dt`` (Song
      et al. 2021, Eq. 13), from the process's ``alpha`` / ``sigma`` derivatives.

    ``parameterization = "velocity"`` (flow matching; Lipman et al. 2023, Liu et al. 2023):
    :meth:`predict_velocity` is the network's ``v_hat = E[d x_t / dt | x_t]
    = alpha' E[x_0 | x_t] + sigma' E[eps | x_t]``, which is :meth:`velocity` itself, and
    :meth:`predict_noise_and_x0` solves ``x = alpha x0 + sigma eps``,
    ``v = alpha' x0 + sigma' eps`` for ``(eps_hat, x0_hat)``
    (:meth:`dgm_runner.sdes.SDE.noise_and_x0_from_velocity`; for the linear path
    ``eps_hat = x + (1 - t) v_hat``, ``x0_hat = (1 - sigma_min) x - sigma(t) v_hat``, exact
    at every t in [0, 1]), so the score, the denoiser and every noise-based sampler (DDPM,
    DDIM) apply unchanged. Both are the same conditional expectations of one path, and
    ``alpha' x0_hat + sigma' eps_hat = f x - g^2 score / 2`` holds exactly (algebra in
    :meth:`~dgm_runner.sdes.SDE.noise_and_x0_from_velocity`).

    Models run in *model space*: :meth:`encode` maps data in [0, 1] there (``2 x - 1``
    when ``centered``, as Ho et al. 2020 scale to [-1, 1]; else the identity) and
    :meth:`decode` maps back. ``log_det_encode`` is ``log |d encode / dx|`` per dimension
    (``log 2`` or 0), used by the bits/dim of :mod:`dgm_runner.metrics.likelihood`.
    ``sigma_data`` is EDM's data std (Karras et al. 2022), the one value that EDM
    preconditioning and the EDM loss weighting of
    :class:`~dgm_runner.objectives.dsm.DiffusionDSM` use (0.5 unless a subclass sets it).
    Subclasses set ``sde``, ``image_shape``, ``centered`` (and ``parameterization``) and
    implement :meth:`predict_noise` (noise) or :meth:`predict_velocity` (velocity).

    **Class-conditional models** (``n_classes > 0``; Ho & Salimans 2022, "Classifier-free
    diffusion guidance"): the network also takes a label in ``[0, n_classes]``, the last
    being the null class (the unconditional model). Every prediction above is made under
    the labels and guidance weight ``w`` set by :meth:`conditioned` (none set: the null
    class, ``w = 0``), so every sampler and objective applies unchanged. With ``w > 0``
    the network's output is ``(1 + w) F(x, t, c) - w F(x, t, null)`` (:meth:`network`),
    which is exactly the guided ``eps = (1 + w) eps(x, c) - w eps(x, null)`` of Ho &
    Salimans (Eq. 6; Algorithm 2) for each parameterisation, and the same combination of
    velocities (flow matching): eps, ``x0_hat`` and the velocity are affine in ``F`` with
    coefficients that do not depend on the label, and the weights ``1 + w`` and ``-w`` sum
    to 1.
    """

    sde: SDE
    image_shape: tuple[int, ...]
    centered: bool = False
    sigma_data: float = 0.5
    #: ``"noise"``: the network is :meth:`predict_noise`; ``"velocity"``: it is
    #: :meth:`predict_velocity` (class docstring).
    parameterization: str = "noise"
    #: label classes of a class-conditional model (0: unconditional); the null class is
    #: ``n_classes``
    n_classes: int = 0
    #: ``(labels (B,) or None, guidance w)`` in force (:meth:`conditioned`)
    _condition: tuple[torch.Tensor | None, float] = (None, 0.0)

    @property
    def conditional(self) -> bool:
        """Whether the model takes class labels (``n_classes > 0``)."""
        return self.n_classes > 0

    @contextmanager
    def conditioned(
        self, labels: torch.Tensor | None, guidance: float = 0.0
    ) -> Iterator["DiffusionModel"]:
        """Within the block, every network evaluation is conditioned on ``labels`` (``(B,)``
        int64 in ``[0, n_classes]``, ``n_classes`` = null; None: all null) with
        classifier-free guidance weight ``guidance`` (``w >= 0``; 0: the conditional
        model itself, one plain pass). The batch size of every evaluation inside must be
        ``B``.

        Raises:
            ValueError: labels or guidance for an unconditional model; a label outside
                ``[0, n_classes]``; ``guidance < 0``.
        """
        if not self.conditional and (labels is not None or guidance):
            raise ValueError(
                f"{type(self).__name__} is not class-conditional: no labels or guidance"
            )
        if guidance < 0:
            raise ValueError(f"guidance must be >= 0, got {guidance}")
        if labels is not None and bool(((labels < 0) | (labels > self.n_classes)).any()):
            raise ValueError(f"labels must be in [0, {self.n_classes}] (null = {self.n_classes})")
        before = self._condition
        self._condition = (labels, float(guidance))
        try:
            yield self
        finally:
            self._condition = before

    def network(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """The network ``F(x, cond)`` ``(B, ...)`` under the labels and guidance of
        :meth:`conditioned`: unconditional models call ``self.net(x, cond)`` as always;
        with ``w = 0`` one pass ``F(x, cond, c)``; with ``w > 0`` **one batched pass of
        ``2 B`` examples** (conditional and null rows) and ``(1 + w) F_c - w F_null``
        (Ho & Salimans 2022, Eq. 6). Samplers count it as one NFE: at ``w > 0`` each NFE
        costs two network evaluations per sample.

        Raises:
            ValueError: the labels set do not match the batch size.
        """
        if not self.conditional:
            return self.net(x, cond)
        labels, w = self._condition
        if labels is None:
            labels = torch.full((x.shape[0],), self.n_classes, device=x.device)
        if labels.shape != (x.shape[0],):
            raise ValueError(f"{labels.shape[0]} labels for a batch of {x.shape[0]}")
        if w == 0.0:
            return self.net(x, cond, labels)
        null = torch.full_like(labels, self.n_classes)
        both = self.net(torch.cat([x, x]), torch.cat([cond, cond]), torch.cat([labels, null]))
        f_cond, f_null = both.chunk(2)
        return (1.0 + w) * f_cond - w * f_null

    def predict_noise(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``(B, ...)`` states at times ``(B,)`` -> ``(B, ...)`` predicted noise (for a
        velocity-parameterised model derived from :meth:`predict_velocity`)."""
        if self.parameterization == "velocity":
            return self.predict_noise_and_x0(x, t)[0]
        raise NotImplementedError

    def predict_velocity(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``(B, ...)`` states at times ``(B,)`` -> ``(B, ...)`` the network's velocity
        ``v_hat`` (velocity-parameterised models; others use :meth:`velocity`)."""
        raise NotImplementedError(
            f"{type(self).__name__} predicts the noise, not the velocity: use velocity()"
        )

    def velocity(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``(B, ...)`` probability-flow velocity ``dx/dt`` at states ``x`` ``(B, ...)`` and
        times ``t`` ``(B,)`` (model space per unit of t), what ODE solvers integrate:
        :meth:`predict_velocity` for a velocity-parameterised model, else
        ``f(t) x - g(t)^2 score(x, t) / 2`` (Song et al. 2021, Eq. 13).

        Raises:
            ValueError: ``f`` or ``g`` infinite at ``t`` (a noise-predicting model on the
                linear path at t = 1: :class:`~dgm_runner.sdes.LinearPath`).
        """
        if self.parameterization == "velocity":
            return self.predict_velocity(x, t)
        g = bcast(self.sde.diffusion(t), x)
        return self.sde.drift(x, t) - 0.5 * g**2 * self.score(x, t)

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
        if self.parameterization == "velocity":
            return self.sde.noise_and_x0_from_velocity(x, self.predict_velocity(x, t), t)
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


#: The U-Net's layers, which ``ScoreUNet`` held itself before issue 27: the first part of
#: their ``state_dict`` keys then (``conv_in.weight``), today under ``net.``.
OLD_UNET_LAYERS = (
    "time_mlp",
    "conv_in",
    "down0",
    "pool0",
    "down1",
    "pool1",
    "mid1",
    "mid2",
    "up1",
    "dec1",
    "up0",
    "dec0",
    "conv_out",
)


# remove after 2027-03-01 (issue 27: old checkpoints)
def nest_old_unet_keys(module: nn.Module, state_dict: dict[str, Any], prefix: str, *_: Any) -> None:
    """A ``load_state_dict`` pre-hook of :class:`ScoreUNet`: the weights of a checkpoint
    written before issue 27 (U-Net layers directly under the model, ``conv_in.weight``) are
    renamed in place to today's ``net.conv_in.weight``, under any ``prefix`` (an EMA's
    ``module.``). Today's keys are left as they are."""
    for key in [k for k in state_dict if k.startswith(prefix)]:
        if key[len(prefix) :].split(".", 1)[0] in OLD_UNET_LAYERS:
            state_dict[f"{prefix}net.{key[len(prefix) :]}"] = state_dict.pop(key)


def _fitting_net(net: Any, channels: int, n_classes: int = 0) -> nn.Module:
    """``net`` completed for ``(B, channels, H, W)`` images: a callable (the partial
    ``model.net``, a class such as :class:`~dgm_runner.models.unet.UNet`) is called with
    ``in_channels=channels``; a built module is used as it is when its ``in_channels`` and
    ``out_channels`` (where it declares them) are ``channels``. ``n_classes > 0``: a
    class-conditional network (the callable gets ``n_classes=``; a built module must
    declare the same ``n_classes``).

    Raises:
        ValueError: a built module for other channels or classes (one line).
        TypeError: ``net`` is neither a module nor callable (e.g. the name ``"unet"``).
    """
    if isinstance(net, nn.Module):
        want = {"in_channels": channels, "out_channels": channels, "n_classes": n_classes}
        wrong = {k: getattr(net, k) for k, v in want.items() if getattr(net, k, v) != v}
        if wrong:
            raise ValueError(
                f"ScoreUNet's net must map {channels}-channel images to {channels} channels "
                f"with {n_classes} classes, got a {type(net).__name__} with "
                + ", ".join(f"{k}={v}" for k, v in wrong.items())
            )
        return net
    if not callable(net):
        raise TypeError(
            f"ScoreUNet's net must be a network or a callable that builds one given "
            f"in_channels, got {net!r}: select one with model/net=unet"
        )
    return net(in_channels=channels, **({"n_classes": n_classes} if n_classes else {}))


class ScoreUNet(DiffusionModel):
    """A diffusion model on ``(B, C, H, W)`` images: a time-conditional network ``F``
    (``net``) under the diffusion process ``sde``, with its parameterisation.

    The network is ``self.net``, by default the U-Net of :class:`dgm_runner.models.unet.UNet`
    (H, W divisible by 4; MNIST: 28 -> 14 -> 7; channels (32, 64, 128): 0.93 M parameters,
    (16, 32, 64): 0.27 M). Shapes: ``(C, H, W)``, any ``C`` (colour included), H and W
    divisible by 4.

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
    - ``velocity``: the network predicts the velocity of the path,
      ``v_hat = F(x, 1000 t)`` for ``d x_t / dt = alpha' x_0 + sigma' eps`` (flow matching,
      ``objective=flow_matching``; under ``model/sde=linear``: ``(1 - sigma_min) eps - x_0``,
      Lipman et al. 2023, Liu et al. 2023); the noise and ``x_0`` follow exactly
      (:class:`DiffusionModel`), so every diffusion sampler applies.

    Weights saved before issue 27 (the U-Net's layers directly under the model) load into
    it: :func:`nest_old_unet_keys` renames them (until 2027-03-01).

    Args:
        image_shape: ``(C, H, W)`` (set by the runner).
        sde: the diffusion process, a built :class:`~dgm_runner.sdes.SDE`: in a config the
            nested node ``model.sde`` of the group ``model/sde`` (``configs/model/sde/``:
            ``ve``, ``vp`` (Song et al. 2021), ``ddpm`` (Ho et al. 2020), ``edm`` (Karras et
            al. 2022), ``linear`` (flow matching)), each with its own numbers, which Hydra
            builds first.
        net: the network ``F``, ``forward(x (B, C, H, W), cond (B,)) -> (B, C, H, W)``: in
            a config the nested partial node ``model.net`` of the group ``model/net``
            (``configs/model/net/unet.yaml``: its ``channels``, ``emb_dim``, ``groups``),
            which this constructor completes with ``in_channels=C``; in Python also a class
            or a built module whose ``in_channels`` and ``out_channels`` are ``C``.
        preconditioning: ``none``, ``edm`` or ``velocity`` (above).
        sigma_data: EDM's data std (0.5 for images in [-1, 1]); the one value of it in a
            run: EDM preconditioning here and the EDM loss weighting of
            :class:`~dgm_runner.objectives.dsm.DiffusionDSM` read it from the model.
        centered: run on ``2 x - 1`` (data in [-1, 1]) instead of [0, 1].
        conditional: a class-conditional model for classifier-free guidance (the network
            gets ``n_classes`` real classes and a null class; :class:`DiffusionModel`).
        n_classes: the dataset's classes (set by the runner); used when ``conditional``.

    Raises:
        ValueError: images not ``(C, H, W)`` with H, W divisible by 4; a U-Net not of 3
            widths; a built ``net`` for other channels.
        TypeError: ``sde`` is not an :class:`~dgm_runner.sdes.SDE` (e.g. the name ``"edm"``
            of the form before issue 27: select it with ``model/sde=edm``); ``net`` is
            neither a module nor callable.
    """

    def __init__(
        self,
        image_shape: tuple[int, ...],
        sde: Annotated[SDE, Component("model/sde")],
        net: Annotated[
            Callable[..., nn.Module], Component("model/net", supplied=("in_channels",))
        ] = UNet,
        preconditioning: Literal["none", "edm", "velocity"] = "none",
        sigma_data: PositiveFloat = 0.5,
        centered: bool = False,
        conditional: bool = False,
        n_classes: PositiveInt = 10,
    ) -> None:
        super().__init__()
        m = UNet.size_multiple
        if len(image_shape) != 3 or image_shape[1] % m or image_shape[2] % m:
            raise ValueError(
                f"ScoreUNet needs (C, H, W) images (any C) with H, W divisible by {m} (the "
                f"U-Net's 2 down-samplings), got {tuple(image_shape)}"
            )
        if not isinstance(sde, SDE):
            raise TypeError(
                f"ScoreUNet's sde must be a diffusion process (dgm_runner.sdes.SDE), got "
                f"{sde!r}: select one with model/sde=ve|vp|ddpm|edm|linear"
            )
        self.image_shape = tuple(image_shape)
        self.sde = sde
        self.preconditioning, self.sigma_data, self.centered = preconditioning, sigma_data, centered
        self.parameterization = "velocity" if preconditioning == "velocity" else "noise"
        self.n_classes = n_classes if conditional else 0
        self.net = _fitting_net(net, image_shape[0], self.n_classes)
        self.register_load_state_dict_pre_hook(nest_old_unet_keys)

    def predict_noise(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` noisy images (model space) at times ``(B,)`` -> predicted noise."""
        if self.preconditioning == "none":
            return self.network(x, t)
        if self.preconditioning == "velocity":
            return self.predict_noise_and_x0(x, t)[0]
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

    def predict_velocity(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` states (model space) at times ``(B,)`` -> the network's velocity
        ``F(x, 1000 t)`` (``preconditioning=velocity``).

        Raises:
            NotImplementedError: the model predicts the noise (use :meth:`velocity`).
        """
        if self.preconditioning != "velocity":
            return super().predict_velocity(x, t)
        return self.network(x, t)
