import pytest
import torch

import ddpm_helpers as dh


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(channels=8, channel_mults=(1,), num_res_blocks=1, attention_resolutions=()),
        dict(channels=8, channel_mults=(1, 2), num_res_blocks=2, attention_resolutions=(16,)),
        dict(channels=16, channel_mults=(1, 2, 2), num_res_blocks=1, attention_resolutions=(8, 16)),
        dict(channels=8, channel_mults=(1, 1, 2, 2), num_res_blocks=1, attention_resolutions=(4,), num_classes=10),
    ],
)
def test_unet_maps_images_to_their_own_shape(kwargs):
    torch.manual_seed(0)
    model = dh.UNet(**kwargs)
    x = torch.randn(3, 1, 32, 32)
    t = torch.tensor([0, 500, 999])
    y = torch.tensor([1, 2, 10]) if kwargs.get("num_classes") else None  # 10 = null class
    assert model(x, t, y).shape == (3, 1, 32, 32)


@torch.no_grad()
def test_unet_starts_by_predicting_zero(tiny_unet):
    out = tiny_unet(torch.randn(2, 1, 32, 32), torch.tensor([3, 700]))
    assert float(out.abs().max()) == 0.0  # zero-initialised output layer


def test_timestep_embedding_is_sinusoidal():
    emb = dh.timestep_embedding(torch.tensor([0, 1, 999]), 16)
    assert emb.shape == (3, 16)
    torch.testing.assert_close(emb[0], torch.cat([torch.zeros(8), torch.ones(8)]))  # sin 0, cos 0
    torch.testing.assert_close(emb[:, 0], torch.sin(torch.tensor([0.0, 1.0, 999.0])))  # ω_0 = 1
    torch.testing.assert_close(emb[:, :8].square() + emb[:, 8:].square(), torch.ones(3, 8))


def test_conditional_unet_uses_the_label_and_the_null_class():
    torch.manual_seed(0)
    model = dh.UNet(channels=8, channel_mults=(1, 2), num_classes=10)
    torch.nn.init.normal_(model.head[-1].weight)  # make the output depend on its input
    x, t = torch.randn(2, 1, 32, 32), torch.tensor([10, 10])
    out_a = model(x, t, torch.tensor([3, 3]))
    out_b = model(x, t, torch.tensor([7, 7]))
    out_null = model(x, t, None)
    assert not torch.allclose(out_a, out_b)
    torch.testing.assert_close(out_null, model(x, t, torch.tensor([10, 10])))


def test_make_unet_follows_the_config():
    model = dh.make_unet(dh.TINY)
    assert model.channels == dh.TINY.channels
    assert dh.count_parameters(dh.make_unet(dh.FULL)) < 3_000_000  # small enough for two CPU cores


def test_unet_bad_inputs():
    model = dh.UNet(channels=8, channel_mults=(1, 2))
    with pytest.raises(ValueError, match="x_t must be 32×32"):
        model(torch.randn(1, 1, 28, 28), torch.tensor([0]))
    with pytest.raises(ValueError, match=r"t must have shape \(2,\)"):
        model(torch.randn(2, 1, 32, 32), torch.tensor([0]))
    with pytest.raises(ValueError, match="unconditional"):
        model(torch.randn(1, 1, 32, 32), torch.tensor([0]), torch.tensor([1]))
    with pytest.raises(ValueError, match="multiple of 8"):
        dh.UNet(channels=12)
    with pytest.raises(ValueError, match="cannot be halved"):
        dh.UNet(channels=8, channel_mults=(1, 1, 1, 1, 1, 1, 1))
    conditional = dh.UNet(channels=8, channel_mults=(1,), num_classes=10)
    with pytest.raises(ValueError, match=r"y must hold labels in \[0, 10\]"):
        conditional(torch.randn(1, 1, 32, 32), torch.tensor([0]), torch.tensor([11]))
