"""Shape-generic models and the synthetic colour dataset (issue 32): which ``(C, H, W)`` each
model takes, the one-line refusal of the others, the DCGAN stacks of Radford et al. (2016),
the convolutional VAE, and ``dataset=synthetic_images``. Training on colour images end to
end: tests/test_contracts.py (``test_experiment_smoke_run_on_colour_images``)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dgm_runner.data.protocols import DynamicBinarization, UniformDequantization
from dgm_runner.data.synthetic import load_synthetic_images
from dgm_runner.models.dcgan import DCGAN
from dgm_runner.models.made import MADE
from dgm_runner.models.rbm import RBM
from dgm_runner.models.unet import UNet
from dgm_runner.models.vae import VAECNN, VAEMLP, VAEConv
from dgm_runner.objectives.elbo import ELBO
from dgm_runner.testing import check_objective

# --------------------------------------------------------------------------- DCGAN


def _layers(seq: nn.Sequential, kind: type) -> list[nn.Module]:
    return [m for m in seq if isinstance(m, kind)]


@pytest.mark.parametrize("side", [32, 64])
def test_dcgan_32_and_64_are_radfords_stacks(side):
    """G from 4x4 doubling to the side with ConvT 4/2/1, widths g 2^(n-1), ..., g; D halving
    to 4x4 with Conv 4/2/1, widths d, 2d, ...; any C."""
    g, d = 8, 4
    model = DCGAN((3, side, side), latent_dim=5, g_channels=g, d_channels=d)
    n = {32: 3, 64: 4}[side]
    ups = _layers(model.generator, nn.ConvTranspose2d)
    assert [(m.in_channels, m.out_channels) for m in ups] == [
        (g * 2 ** (n - 1 - i), g * 2 ** (n - 2 - i) if i < n - 1 else 3) for i in range(n)
    ]
    assert all(m.kernel_size == (4, 4) and m.stride == (2, 2) for m in ups)
    downs = _layers(model.discriminator, nn.Conv2d)
    assert [m.out_channels for m in downs] == [d * 2**i for i in range(n)]
    with torch.no_grad():
        x = model.generate(torch.randn(2, 5))
    assert x.shape == (2, 3, side, side) and 0 <= float(x.min()) and float(x.max()) <= 1
    assert model.generator[1].unflattened_size == (g * 2 ** (n - 1), 4, 4)
    assert model.discriminate(x).shape == (2,)


def test_dcgan_28_keeps_its_mnist_network():
    """(C, 28, 28): Linear -> (4g, 7, 7) -> 14 -> 28, D 28 -> 14 -> 7; 1 481 154 parameters
    on 1x28x28 with the defaults (as before issue 32)."""
    model = DCGAN((1, 28, 28))
    assert sum(p.numel() for p in model.parameters()) == 1_481_154
    assert model.generator[1].unflattened_size == (256, 7, 7)
    assert model.generate(torch.randn(1, 64)).shape == (1, 1, 28, 28)


@pytest.mark.parametrize("shape", [(3, 14, 14), (1, 32, 28), (3, 48, 48), (2,)])
def test_dcgan_refuses_other_shapes_in_one_line_naming_those_it_takes(shape):
    with pytest.raises(ValueError) as err:
        DCGAN(shape)
    message = str(err.value)
    assert "(C, 28, 28), (C, 32, 32) or (C, 64, 64)" in message and "\n" not in message


# --------------------------------------------------------------------------- VAEs


@pytest.mark.parametrize(
    ("shape", "n_down"), [((3, 32, 32), 2), ((1, 28, 28), 2), ((3, 16, 24), 3), ((2, 8, 8), 1)]
)
def test_vae_conv_takes_any_channels_and_sizes_divisible_by_its_downsamplings(shape, n_down):
    model = VAEConv(shape, latent_dim=3, channels=4, n_down=n_down)
    mu, logvar = model.encode(torch.rand(2, *shape))
    assert mu.shape == logvar.shape == (2, 3)
    out = model.decode(mu)
    assert out.shape == (2, *shape) and 0 <= float(out.min()) and float(out.max()) <= 1
    strided = [m for m in model.encoder if isinstance(m, nn.Conv2d)]
    assert len(strided) == n_down and all(m.stride == (2, 2) for m in strided)


def test_vae_conv_refuses_sizes_it_cannot_halve_and_vae_cnn_points_to_it():
    with pytest.raises(ValueError, match=r"divisible by 8, got \(3, 28, 28\)"):
        VAEConv((3, 28, 28), n_down=3)
    with pytest.raises(ValueError) as err:
        VAECNN((3, 32, 32))
    message = str(err.value)
    assert "needs 1x28x28 images" in message and "model=vae_conv" in message
    assert "\n" not in message


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
@pytest.mark.parametrize("model", ["mlp", "conv"])
def test_vaes_train_on_colour_images_with_either_decoder(model, likelihood):
    """The ELBO's contract (:func:`check_objective`) on 3x8x8 images."""
    shape = (3, 8, 8)
    torch.manual_seed(0)
    vae = (
        VAEMLP(shape, latent_dim=3, hidden_dim=8)
        if model == "mlp"
        else VAEConv(shape, latent_dim=3, channels=4)
    )
    check_objective(ELBO(likelihood=likelihood, iwae_k=0), vae, shape)


# --------------------------------------------------------------------------- others


def test_rbm_made_and_unet_take_colour_images():
    shape = (3, 4, 4)
    assert RBM(shape, hidden_dim=5).visible_dim == 48
    assert MADE(shape, hidden_dim=16).n_dims == 48
    net = UNet(3, channels=(4, 8, 8), emb_dim=8, groups=2)
    assert net(torch.rand(2, 3, 8, 12), torch.rand(2)).shape == (2, 3, 8, 12)
    with pytest.raises(ValueError, match="divisible by 4") as err:
        net(torch.rand(2, 3, 6, 8), torch.rand(2))
    assert "\n" not in str(err.value)


# --------------------------------------------------------------------------- synthetic data


def test_synthetic_images_are_smooth_colour_8_bit_images_from_the_seed():
    data = load_synthetic_images(n_train=40, n_test=20, n_classes=4, seed=3)
    assert data.name == "synthetic_images" and data.image_shape == (3, 32, 32)
    x = data.train_x
    assert x.dtype == torch.float32 and 0 <= float(x.min()) and float(x.max()) <= 1
    torch.testing.assert_close(x * 255, (x * 255).round(), atol=1e-4, rtol=0)  # k / 255
    assert torch.equal(data.train_y, torch.arange(40) % 4)
    assert torch.equal(data.test_y, torch.arange(20) % 4)
    assert (x[:, 0] != x[:, 1]).any() and (x[:, 1] != x[:, 2]).any()  # colour, not grey
    # smooth: neighbouring pixels differ far less than random pixels do
    step = (x[..., 1:] - x[..., :-1]).abs().mean()
    shuffled = x.flatten(1)[:, torch.randperm(3 * 32 * 32, generator=torch.Generator())]
    assert step < 0.2 * (shuffled[:, 1:] - shuffled[:, :-1]).abs().mean()
    again = load_synthetic_images(n_train=40, n_test=20, n_classes=4, seed=3)
    other = load_synthetic_images(n_train=40, n_test=20, n_classes=4, seed=4)
    assert torch.equal(again.train_x, x) and not torch.equal(other.train_x, x)
    assert not data.binarized and data.train_transform is None


def test_synthetic_images_follow_the_data_protocols():
    kw = {"channels": 1, "image_size": 8, "n_train": 30, "n_test": 10}
    grey = load_synthetic_images(**kw)
    threshold = load_synthetic_images(binarize="threshold", threshold=0.3, **kw)
    assert torch.equal(threshold.train_x, (grey.train_x > 0.3).float())
    assert torch.equal(threshold.grey_test_x, grey.test_x) and threshold.binarized
    dynamic = load_synthetic_images(binarize="dynamic", **kw)
    assert torch.equal(dynamic.train_x, grey.train_x)  # binarized per use
    assert isinstance(dynamic.train_transform, DynamicBinarization)
    assert set(dynamic.test_x.unique().tolist()) <= {0.0, 1.0}
    fixed = load_synthetic_images(binarize="fixed", **kw)
    assert set(fixed.train_x.unique().tolist()) <= {0.0, 1.0} and fixed.train_transform is None
    assert torch.equal(fixed.test_x, dynamic.test_x)  # the test split's bits: binarize_seed
    dequantized = load_synthetic_images(dequantize="uniform", **kw)
    assert isinstance(dequantized.train_transform, UniformDequantization)
    small = load_synthetic_images(subset=7, test_subset=3, **kw)
    assert small.train_x.shape[0] == 7 and torch.equal(small.test_x, grey.test_x[:3])
    with pytest.raises(ValueError, match="dequantize=uniform needs grey images"):
        load_synthetic_images(binarize="threshold", dequantize="uniform", **kw)
    with pytest.raises(Exception, match="dataset.subset=31 is larger than the 30"):
        load_synthetic_images(subset=31, **kw)
