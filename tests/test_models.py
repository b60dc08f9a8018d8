"""Architectures exactly as seed 000 Q4 specifies them."""

import pytest
import torch
from torch import nn

from dgm_runner.models import RBM, VAECNN, VAEMLP


@pytest.mark.parametrize("nz", [2, 5, 10, 20])
def test_vae_cnn_layers_and_parameter_count_follow_tables_1_and_2(nz):
    model = VAECNN((1, 28, 28), latent_dim=nz)
    convs = [m for m in model.encoder if isinstance(m, nn.Conv2d)]
    pools = [m for m in model.encoder if isinstance(m, nn.MaxPool2d)]
    # Table 1: three Conv(3x3, pad 1) 1->8->8->8, each followed by ReLU and MaxPool(2, 2).
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.padding) for c in convs] == [
        (1, 8, (3, 3), (1, 1)),
        (8, 8, (3, 3), (1, 1)),
        (8, 8, (3, 3), (1, 1)),
    ]
    assert [(p.kernel_size, p.stride) for p in pools] == [(2, 2)] * 3
    deconvs = [m for m in model.decoder if isinstance(m, nn.ConvTranspose2d)]
    # Table 2: three DeConv(k2, s2) 8->8, the first with output padding 1.
    assert [
        (d.in_channels, d.out_channels, d.kernel_size, d.stride, d.output_padding) for d in deconvs
    ] == [
        (8, 8, (2, 2), (2, 2), (1, 1)),
        (8, 8, (2, 2), (2, 2), (0, 0)),
        (8, 8, (2, 2), (2, 2), (0, 0)),
    ]
    last = [m for m in model.decoder if isinstance(m, nn.Conv2d)][-1]
    assert (last.in_channels, last.out_channels, last.kernel_size, last.padding) == (
        8,
        1,
        (3, 3),
        (1, 1),
    )
    assert model.decoder[-1] is last and isinstance(model.output, nn.Sigmoid)  # Conv -> Sigmoid

    # Parameter count from the tables: convs 1*8*9+8 + 2*(8*8*9+8); heads 2*(72*nz+nz);
    # decoder linear nz*72+72; deconvs 3*(8*8*4+8); output conv 8*9+1.
    expected = (80 + 2 * 584) + 2 * (72 * nz + nz) + (nz * 72 + 72) + 3 * 264 + 73
    assert sum(p.numel() for p in model.parameters()) == expected

    x = torch.rand(3, 1, 28, 28)
    feats = model.encoder[:3](x), model.encoder[:6](x), model.encoder[:9](x)
    assert [f.shape[-1] for f in feats] == [14, 7, 3]
    mu, logvar = model.encode(x)
    assert mu.shape == logvar.shape == (3, nz)
    z = torch.randn(3, nz)
    assert [model.decoder[:i](z).shape[-1] for i in (4, 6, 8)] == [7, 14, 28]
    out = model.decode(z)
    assert out.shape == (3, 1, 28, 28) and float(out.min()) >= 0 and float(out.max()) <= 1


def test_vae_cnn_rejects_other_image_sizes():
    with pytest.raises(ValueError, match="1x28x28"):
        VAECNN((3, 32, 32), latent_dim=2)


def test_vae_mlp_is_one_hidden_layer_of_500_tanh_units():
    model = VAEMLP((1, 28, 28), latent_dim=5)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [
        (784, 500),
        (500, 5),
        (500, 5),
        (5, 500),
        (500, 784),
    ]
    assert sum(isinstance(m, nn.Tanh) for m in model.modules()) == 2
    assert isinstance(model.output, nn.Sigmoid)
    z = torch.randn(4, 5)
    assert model.decode(z).shape == (4, 1, 28, 28)
    torch.testing.assert_close(model.decode(z), torch.sigmoid(model.decode_logits(z)))


def test_conditional_vae_takes_one_hot_labels_in_encoder_and_decoder():
    model = VAEMLP((1, 28, 28), latent_dim=3, hidden_dim=50, conditional=True, n_classes=10)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert (linears[0].in_features, linears[3].in_features) == (784 + 10, 3 + 10)
    x, y = torch.rand(6, 1, 28, 28), torch.arange(6)
    mu, logvar = model.encode(x, y)
    assert mu.shape == (6, 3)
    z = torch.zeros(6, 3)
    out = model.decode(z, y)
    assert out.shape == (6, 1, 28, 28) and not torch.allclose(out[0], out[1])  # the label matters
    with pytest.raises(ValueError, match="conditional"):
        model.decode(z)


def test_rbm_shapes():
    rbm = RBM((1, 28, 28), hidden_dim=128)
    assert rbm.W.shape == (784, 128) and rbm.b.shape == (784,) and rbm.c.shape == (128,)
    v = torch.bernoulli(torch.full((5, 784), 0.5))
    v2, p = rbm.gibbs_step(v)
    assert v2.shape == p.shape == (5, 784) and set(v2.unique().tolist()) <= {0.0, 1.0}
