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
    model = dh.UNet(dh.UNetConfig(**kwargs, patch_size=1))
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
    torch.testing.assert_close(emb[0], torch.cat([torch.zeros(8), torch.ones(8)]), rtol=0, atol=0)  # sin 0, cos 0: exact
    # sin of the same float32 argument, maybe by another kernel (vectorised or scalar, each within ~1 ulp):
    # ≤ 2.4e-7, inside the float32 defaults (atol 1e-5)
    torch.testing.assert_close(emb[:, 0], torch.sin(torch.tensor([0.0, 1.0, 999.0])))  # ω_0 = 1
    # sin² + cos²: ~1 ulp in each, 3 roundings: ≤ 5u ≈ 3e-7 from 1, inside the defaults
    torch.testing.assert_close(emb[:, :8].square() + emb[:, 8:].square(), torch.ones(3, 8))


def test_conditional_unet_uses_the_label_and_the_null_class():
    torch.manual_seed(0)
    model = dh.UNet(dh.UNetConfig(channels=8, channel_mults=(1, 2), attention_resolutions=(), patch_size=1, num_classes=10))
    torch.nn.init.normal_(model.head[-1].weight)  # make the output depend on its input
    x, t = torch.randn(2, 1, 32, 32), torch.tensor([10, 10])
    out_a = model(x, t, torch.tensor([3, 3]))
    out_b = model(x, t, torch.tensor([7, 7]))
    out_null = model(x, t, None)
    assert not torch.allclose(out_a, out_b)
    torch.testing.assert_close(out_null, model(x, t, torch.tensor([10, 10])), rtol=0, atol=0)  # the same computation


def test_unet_follows_its_config():
    model = dh.UNet(dh.TINY.unet)
    assert model.config == dh.TINY.unet and model.channels == dh.TINY.unet.channels
    assert dh.count_parameters(dh.UNet(dh.FULL.unet)) < 3_000_000  # small enough for two CPU cores
    conditional = dh.UNet(dh.TINY.unet.replace(num_classes=10))
    assert conditional.num_classes == 10 and conditional.class_emb.num_embeddings == 11  # 10 digits + the null class


def test_unet_bad_inputs():
    model = dh.UNet(dh.UNetConfig(channels=8, channel_mults=(1, 2), attention_resolutions=(), patch_size=1))
    with pytest.raises(ValueError, match=r"x_t must have shape \(B, 1, 32, 32\)"):
        model(torch.randn(1, 1, 28, 28), torch.tensor([0]))
    with pytest.raises(ValueError, match=r"t must have shape \(2,\)"):
        model(torch.randn(2, 1, 32, 32), torch.tensor([0]))
    with pytest.raises(ValueError, match="unconditional"):
        model(torch.randn(1, 1, 32, 32), torch.tensor([0]), torch.tensor([1]))
    with pytest.raises(ValueError, match="multiple of 8"):
        dh.UNetConfig(channels=12)
    with pytest.raises(ValueError, match="cannot be halved"):
        dh.UNetConfig(channels=8, channel_mults=(1, 1, 1, 1, 1, 1, 1), attention_resolutions=(), patch_size=1)
    with pytest.raises(ValueError, match=r"attention_resolutions must be a tuple of feature-map sizes the network reaches, \[8, 16\]"):
        dh.UNetConfig(channels=8, channel_mults=(1, 2), attention_resolutions=(32,))  # patch 2: the network runs at 16 and 8
    with pytest.raises(ValueError, match="config must be a dh.UNetConfig, got Config"):
        dh.UNet(dh.TINY)  # the run's config, not the network's: dh.UNet(cfg.unet)
    conditional = dh.UNet(dh.UNetConfig(channels=8, channel_mults=(1,), attention_resolutions=(), patch_size=1, num_classes=10))
    with pytest.raises(ValueError, match=r"y must hold labels in \[0, 10\]"):
        conditional(torch.randn(1, 1, 32, 32), torch.tensor([0]), torch.tensor([11]))


@pytest.mark.parametrize(
    "patch_size,attention,downsample,ws",
    [(2, (8,), "conv", False), (1, (), "space_to_depth", False), (2, (8,), "space_to_depth", True)],  # with patch 1, no 8×8 level
)
def test_unet_design_options_keep_the_shape(patch_size, attention, downsample, ws):
    torch.manual_seed(0)
    config = dh.UNetConfig(channels=8, channel_mults=(1, 2), attention_resolutions=attention, patch_size=patch_size, downsample=downsample, weight_standardization=ws)
    model = dh.UNet(config)
    torch.nn.init.normal_(model.head[-1].weight)
    x = torch.randn(2, 1, 32, 32)
    out = model(x, torch.tensor([1, 900]))
    assert out.shape == x.shape and float(out.detach().abs().sum()) > 0
    assert model.stem.in_channels == patch_size**2  # the stem sees p×p patches as channels


def test_patch_stem_runs_the_network_at_lower_resolution():
    seen = []
    model = dh.UNet(dh.UNetConfig(channels=8, channel_mults=(1,), attention_resolutions=(), patch_size=4))
    model.stem.register_forward_hook(lambda module, args, out: seen.append(out.shape))
    model(torch.randn(1, 1, 32, 32), torch.tensor([0]))
    assert seen == [torch.Size([1, 8, 8, 8])]


def test_space_to_depth_downsampling_is_lossless_before_its_projection():
    down = dh.make_downsample(4, "space_to_depth")
    x = torch.randn(2, 4, 8, 8)
    folded = down[0](x)
    assert folded.shape == (2, 16, 4, 4) and down(x).shape == (2, 4, 4, 4)
    torch.testing.assert_close(torch.nn.functional.pixel_shuffle(folded, 2), x, rtol=0, atol=0)  # a permutation: exact
    with pytest.raises(ValueError, match="downsample must be"):
        dh.make_downsample(4, "maxpool")


def test_weight_standardised_conv_ignores_the_scale_and_offset_of_its_kernel():
    """Ŵ = (W − μ)/√(σ² + ε): scaling W by a and shifting it gives the same Ŵ, with ε acting as ε/a²."""
    torch.manual_seed(0)
    conv = dh.WSConv2d(3, 5, 3, padding=1)
    x = torch.randn(2, 3, 8, 8)
    w = conv.weight.detach().clone()
    mean, var = w.mean(dim=(1, 2, 3), keepdim=True), w.var(dim=(1, 2, 3), keepdim=True, unbiased=False)
    with torch.no_grad():
        # Each output is a 27-term sum Σŵx with Σ|ŵ||x| ≲ 40 here (standardised ŵ of size ~1, |x| ≲ 4).
        # The package and the test standardise W with float32 means and variances over 27 values,
        # which may differ by ≤ 27·u relative (summation order), i.e. ŵ by ≤ 14·u: ≤ 40·14·u ≈ 3.4e-5.
        torch.testing.assert_close(conv(x), torch.nn.functional.conv2d(x, (w - mean) / (var + 1e-5).sqrt(), conv.bias, padding=1), rtol=1e-4, atol=1e-4)
        a = 7.0
        conv.weight.mul_(a).add_(0.3)
        expected = torch.nn.functional.conv2d(x, (w - mean) / (var + 1e-5 / a**2).sqrt(), conv.bias, padding=1)
        # As above, plus the rounding of 7W + 0.3 (|7W + 0.3| ≤ 1.7), which the subtraction of the mean turns into
        # ≤ 2u·1.7/(7σ_W ≈ 0.77) ≈ 4.4u relative on ŵ: ≤ 40·19·u ≈ 4.5e-5 in all, under atol 1e-4.
        torch.testing.assert_close(conv(x), expected, rtol=1e-4, atol=1e-4)


def test_bad_patch_size_is_refused():
    with pytest.raises(ValueError, match="patch_size must be a positive divisor"):
        dh.UNetConfig(channels=8, patch_size=3)
    with pytest.raises(ValueError, match="cannot be halved"):
        dh.UNetConfig(channels=8, channel_mults=(1, 2, 2, 2, 2), patch_size=4)


def test_every_res_block_responds_to_the_timestep():
    """With scale and shift applied after the norm, no block can lose t, even with 1 channel per group."""
    torch.manual_seed(0)
    model = dh.UNet(dh.TINY.unet)  # 8 channels: GroupNorm(8, 8) has one channel per group
    with torch.no_grad():
        e10, e900 = model.embed(torch.tensor([10]), None), model.embed(torch.tensor([900]), None)
        blocks = [(name, m) for name, m in model.named_modules() if isinstance(m, dh.ResBlock)]
        assert blocks
        for name, block in blocks:
            h = torch.randn(1, block.conv1.in_channels, 8, 8)
            # a block that used t would change its output by O(0.1); rounding alone by ≲ 1e-6
            assert not torch.allclose(block(h, e10), block(h, e900), atol=1e-4), name


def test_self_attention_is_softmax_of_scaled_dot_products():
    """x + W_out · softmax(QKᵀ/√d) V over the H·W positions, per head."""
    torch.manual_seed(0)
    attention = dh.SelfAttention(32, num_heads=4)
    x = torch.randn(2, 32, 8, 8)
    with torch.no_grad():
        qkv = attention.qkv(attention.norm(x)).reshape(2, 3, 4, 8, 64)
        q, k, v = (qkv[:, i].transpose(-1, -2) for i in range(3))  # (B, heads, positions, head_dim)
        weights = torch.softmax(q @ k.transpose(-1, -2) / 8**0.5, dim=-1)
        expected = x + attention.out((weights @ v).transpose(-1, -2).reshape(2, 32, 8, 8))
        # Worst case of two evaluation orders: the logits (8-term dot products of terms ≲ 4) differ by
        # ≲ 8u·32/√8 ≈ 5e-6, so the weights by ≲ 1e-5 relative; the weighted sums over 64 positions add
        # 64u·|v| ≲ 1e-5 (|v| ≲ 3); W_out sums 32 of them with Σ|W_out| ≲ 3: ≲ 1.3e-4. atol = rtol = 2e-4;
        # a wrong scale (1/d for 1/√d) or a missing residual is off by > 0.1.
        torch.testing.assert_close(attention(x), expected, rtol=2e-4, atol=2e-4)
