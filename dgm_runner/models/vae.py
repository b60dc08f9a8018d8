"""VAEs with a Gaussian latent: VAE1 (MLP) and VAE2 (CNN) of seed 000, question 4, and a
shape-generic convolutional VAE (:class:`VAEConv`, ``model=vae_conv``)."""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from dgm_runner.config import NonNegativeFloat, PositiveInt
from dgm_runner.models.checks import require_images


class GaussianVAE(nn.Module):
    """Base class: ``q(z|x) = N(mu(x), diag exp(logvar(x)))``, ``p(z) = N(0, I)`` and a
    decoder whose output, passed through ``self.output`` (a Sigmoid), is the mean image
    in [0, 1]. The pre-sigmoid values are the Bernoulli logits, so likelihoods can be
    computed stably from logits (:func:`dgm_runner.distributions.log_bernoulli`).

    Subclasses set ``self.encoder`` (``(B, C, H, W) -> (B, F)`` features), ``self.fc_mu``,
    ``self.fc_logvar`` (``F -> latent_dim``) and ``self.decoder``
    (``(B, latent_dim) -> (B, C, H, W)`` logits). Conditional subclasses set
    ``conditional = True`` and ``n_classes``; they take one-hot labels (Sohn et al. 2015).

    Attributes:
        image_shape: ``(C, H, W)``.
        latent_dim: N_z.
        conditional: whether ``encode``/``decode`` need the labels ``y``.
    """

    image_shape: tuple[int, int, int]
    latent_dim: int
    conditional: bool = False
    n_classes: int = 10

    def __init__(self) -> None:
        super().__init__()
        self.output = nn.Sigmoid()

    def _with_label(self, h: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        if not self.conditional:
            return h
        if y is None:
            raise ValueError(f"{type(self).__name__} is conditional: pass the labels y")
        return torch.cat([h, F.one_hot(y, self.n_classes).to(h.dtype)], dim=1)

    def encode(
        self, x: torch.Tensor, y: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, C, H, W)`` images (and ``(B,)`` labels if conditional) -> ``(mu, logvar)``,
        each ``(B, latent_dim)``."""
        if self.conditional:  # q(z|x, y): the one-hot label joins the flattened image
            x = self._with_label(x.flatten(1), y)
        features = self.encoder(x)
        return self.fc_mu(features), self.fc_logvar(features)

    def decode_logits(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, latent_dim)`` latents -> ``(B, C, H, W)`` pre-sigmoid outputs (logits)."""
        return self.decoder(self._with_label(z, y))

    def decode(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, latent_dim)`` latents -> ``(B, C, H, W)`` mean image in [0, 1]."""
        return self.output(self.decode_logits(z, y))

    def decode_std(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """``(B,)`` learned decoder standard deviation sigma(z) (models with
        ``decoder_std="learned"`` only).

        Raises:
            TypeError: the model has no learned decoder variance.
        """
        raise TypeError(
            f"{type(self).__name__} has no learned decoder variance (set decoder_std=learned)"
        )


def _tanh_layers(n_in: int, width: int, n_layers: int) -> list[nn.Module]:
    """``n_layers`` x (Linear -> Tanh): ``n_in -> width -> ... -> width``, built (and so
    initialised from the global RNG) in that order."""
    layers: list[nn.Module] = []
    for i in range(n_layers):
        layers += [nn.Linear(n_in if i == 0 else width, width), nn.Tanh()]
    return layers


class VAEMLP(GaussianVAE):
    """MLP VAE with ``hidden_layers`` hidden layers of ``hidden_dim`` tanh units in the
    encoder (D -> hidden -> ... -> (mu, logvar)) and in the decoder
    (N_z -> hidden -> ... -> D, sigmoid). Shapes: any ``(C, H, W)`` images (``D = C H W``,
    colour included).

    VAE1 of seed 000 (hidden 500), the Bernoulli VAE of seed 001 Q2 (hidden 500, N_z = 2)
    and the 196-128-8 VAE of seed 002 Problem 2 are all this class with one hidden layer;
    with two layers of 200 and N_z = 50 it is the network of Burda et al. (2016), Sec. 5
    (one stochastic layer: 784-200-200-50 / 50-200-200-784). With
    ``conditional=True`` it is the CVAE of Sohn et al. (2015) / seed 004 Q3: the one-hot
    label is concatenated to the encoder input (q(z|x,y)) and to z (p(x|z,y)).

    Args:
        image_shape: ``(C, H, W)`` of the data (set by the runner).
        latent_dim: N_z (seed 000: 2, 5, 10, 20).
        hidden_dim: width of the hidden layers (seed 000: 500).
        hidden_layers: number of tanh hidden layers of the encoder and of the decoder
            (1: the seeds' VAEs; 2: Burda et al.'s). The ``decoder_std="learned"`` network
            keeps one hidden layer.
        conditional: condition encoder and decoder on the class label.
        decoder_std: ``fixed`` or ``learned``: a scalar sigma(z) per example from a separate
            MLP (latent -> hidden (tanh) -> 1), for the Gaussian likelihood
            ``N(x; mu(z), sigma(z)^2 I)`` of seed 003 written Q2.
        std_param: how sigma is made positive: ``exp`` (sigma = exp(r), clamped below at
            ``std_floor``) or ``softplus`` (sigma = std_floor + softplus(r)).
        std_floor: lower bound on sigma (0: none). As sigma -> 0 the term
            ``||x - mu||^2 / (2 sigma^2)`` and its gradient blow up (and ``log sigma`` -> -inf
            rewards that); as sigma grows the reconstruction gradient vanishes like
            ``1 / sigma^2``. A floor keeps the loss bounded below.
        n_classes: number of classes (set by the runner; used when conditional).
    """

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        latent_dim: PositiveInt = 20,
        hidden_dim: PositiveInt = 500,
        hidden_layers: PositiveInt = 1,
        conditional: bool = False,
        decoder_std: Literal["fixed", "learned"] = "fixed",
        std_param: Literal["exp", "softplus"] = "softplus",
        std_floor: NonNegativeFloat = 0.0,
        n_classes: int = 10,
    ) -> None:
        super().__init__()
        self.image_shape = require_images(image_shape, "model=vae_mlp")
        self.std_param, self.std_floor = std_param, std_floor
        self.latent_dim = latent_dim
        self.conditional = conditional
        self.n_classes = n_classes
        d = math.prod(image_shape)
        extra = n_classes if conditional else 0
        self.encoder = nn.Sequential(
            nn.Flatten(), *_tanh_layers(d + extra, hidden_dim, hidden_layers)
        )
        self.fc_mu = nn.Linear(hidden_dim, latent_dim)
        self.fc_logvar = nn.Linear(hidden_dim, latent_dim)
        self.decoder = nn.Sequential(
            *_tanh_layers(latent_dim + extra, hidden_dim, hidden_layers),
            nn.Linear(hidden_dim, d),
            nn.Unflatten(1, self.image_shape),
        )
        self.std_net = (
            nn.Sequential(
                nn.Linear(latent_dim + extra, hidden_dim), nn.Tanh(), nn.Linear(hidden_dim, 1)
            )
            if decoder_std == "learned"
            else None
        )

    def decode_std(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if self.std_net is None:
            return super().decode_std(z, y)
        raw = self.std_net(self._with_label(z, y)).squeeze(1)
        if self.std_param == "softplus":
            return self.std_floor + F.softplus(raw)
        return torch.exp(raw).clamp_min(self.std_floor) if self.std_floor > 0 else torch.exp(raw)


class VAECNN(GaussianVAE):
    """VAE2 of seed 000 (its Tables 1 and 2), for 1x28x28 images.

    Encoder: 3 x [Conv 3x3 pad 1 -> ReLU -> MaxPool 2/2] with channels 1->8->8->8
    (28 -> 14 -> 7 -> 3), flatten (8*3*3 = 72), then two Linear heads 72 -> N_z for the
    mean and the log-variance.
    Decoder: Linear N_z -> 72, reshape to (8, 3, 3), 3 x [ConvTranspose k2 s2 -> ReLU]
    (the first with output_padding 1: 3 -> 7 -> 14 -> 28), Conv 3x3 pad 1 (8 -> 1),
    Sigmoid. PyTorch defaults everywhere else, as the seed asks.

    Shapes: ``(1, 28, 28)`` only (the seed's network); :class:`VAEConv` (``model=vae_conv``)
    takes any ``(C, H, W)``.

    Args:
        image_shape: must be ``(1, 28, 28)``.
        latent_dim: N_z.
        channels: conv width (seed: 8).

    Raises:
        ValueError: (one line) ``image_shape`` is not ``(1, 28, 28)``; it names
            ``model=vae_conv``.
    """

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        latent_dim: PositiveInt = 20,
        channels: PositiveInt = 8,
    ) -> None:
        super().__init__()
        if tuple(image_shape) != (1, 28, 28):
            raise ValueError(
                f"model=vae_cnn (seed 000's VAE2) needs 1x28x28 images, the dataset has "
                f"{tuple(image_shape)}: use model=vae_conv (or vae_mlp) for other shapes"
            )
        self.image_shape = (1, 28, 28)
        self.latent_dim = latent_dim
        c = channels
        flat = c * 3 * 3

        def block(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, 2)]

        self.encoder = nn.Sequential(*block(1, c), *block(c, c), *block(c, c), nn.Flatten())
        self.fc_mu = nn.Linear(flat, latent_dim)
        self.fc_logvar = nn.Linear(flat, latent_dim)
        self.decoder = nn.Sequential(
            nn.Linear(latent_dim, flat),
            nn.Unflatten(1, (c, 3, 3)),
            nn.ConvTranspose2d(c, c, 2, stride=2, output_padding=1),
            nn.ReLU(),
            nn.ConvTranspose2d(c, c, 2, stride=2),
            nn.ReLU(),
            nn.ConvTranspose2d(c, c, 2, stride=2),
            nn.ReLU(),
            nn.Conv2d(c, 1, 3, padding=1),
        )  # then self.output = Sigmoid (Table 2's Conv-Sigmoid)


class VAEConv(GaussianVAE):
    """A shape-generic convolutional VAE (``model=vae_conv``) for ``(C, H, W)`` images, any
    ``C``, with ``H`` and ``W`` divisible by ``2 ** n_down``.

    Encoder (DCGAN-like, Radford et al. 2016): ``n_down`` x [Conv 4/2/1 -> ReLU], widths
    ``c, 2c, 4c, ...`` (each halves H and W), flatten, then two Linear heads to N_z for the
    mean and the log-variance. Decoder, the mirror image: Linear N_z ->
    ``(c 2^(n-1), H / 2^n, W / 2^n)`` -> ReLU -> ``n_down - 1`` x [ConvT 4/2/1 -> ReLU]
    (widths halving) -> ConvT 4/2/1 to ``C`` channels: the logits, which the base class's
    Sigmoid turns into the mean image. Every objective and sampler of the VAE family applies
    (ELBO with Bernoulli or Gaussian likelihoods, IWAE, ancestral sampling); not
    class-conditional, no learned decoder variance.

    Args:
        image_shape: ``(C, H, W)`` (set by the runner).
        latent_dim: N_z.
        channels: ``c``, the width after the first down-sampling.
        n_down: stride-2 down-samplings of the encoder (and up-samplings of the decoder).

    Raises:
        ValueError: (one line) non-image data, or ``H``, ``W`` not divisible by
            ``2 ** n_down``.
    """

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        latent_dim: PositiveInt = 20,
        channels: PositiveInt = 32,
        n_down: PositiveInt = 2,
    ) -> None:
        super().__init__()
        c, h, w = require_images(image_shape, "model=vae_conv")
        factor = 2**n_down
        if h % factor or w % factor:
            raise ValueError(
                f"model=vae_conv with n_down={n_down} needs (C, H, W) images with H and W "
                f"divisible by {factor}, got {(c, h, w)}: lower model.n_down"
            )
        self.image_shape = (c, h, w)
        self.latent_dim = latent_dim
        widths = [channels * 2**i for i in range(n_down)]
        h0, w0 = h // factor, w // factor
        flat = widths[-1] * h0 * w0
        encoder: list[nn.Module] = []
        for i, width in enumerate(widths):
            encoder += [nn.Conv2d(widths[i - 1] if i else c, width, 4, 2, 1), nn.ReLU()]
        self.encoder = nn.Sequential(*encoder, nn.Flatten())
        self.fc_mu = nn.Linear(flat, latent_dim)
        self.fc_logvar = nn.Linear(flat, latent_dim)
        decoder: list[nn.Module] = [
            nn.Linear(latent_dim, flat),
            nn.Unflatten(1, (widths[-1], h0, w0)),
            nn.ReLU(),
        ]
        for i in reversed(range(n_down)):
            out = widths[i - 1] if i else c
            decoder.append(nn.ConvTranspose2d(widths[i], out, 4, 2, 1))
            if i:
                decoder.append(nn.ReLU())
        self.decoder = nn.Sequential(*decoder)  # then self.output = Sigmoid
