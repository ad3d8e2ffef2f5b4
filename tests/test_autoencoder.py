"""The autoencoder of latent diffusion: channel gate, residual identity, shapes, training, latent scaling."""

import json
import math

import pytest
import torch

import ddpm_helpers as dh

from ddpm_helpers.autoencoder import (
    AttentionResBlock,
    Autoencoder,
    AutoencoderConfig,
    ChannelAttention,
    reconstruction_loss,
    train_autoencoder,
)
from ddpm_helpers.latent import check_latent_model, decode_latents, encode_images, latent_range, latent_scale

SMALL = AutoencoderConfig(image_size=16, channels=(8, 16), latent_channels=4)


def smooth_images(num_images: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """Blurry random images in (-1, 1): coarse noise upsampled, so an autoencoder can learn them quickly."""
    coarse = torch.randn(num_images, 1, size // 4, size // 4, generator=generator)
    return torch.tanh(torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear"))


def count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_channel_gate_lies_strictly_in_zero_one_and_keeps_the_shape():
    torch.manual_seed(0)
    attention = ChannelAttention(16)
    x = torch.randn(3, 16, 8, 8)
    gate = attention.gate(x)
    assert gate.shape == (3, 16, 1, 1)
    assert bool((gate > 0).all()) and bool((gate < 1).all())
    out = attention(x)
    assert out.shape == x.shape
    torch.testing.assert_close(out, x * gate, rtol=0, atol=0)  # the same product of the same tensors


@pytest.mark.parametrize("channels, expected_hidden", [(16, 4), (32, 4), (64, 8)])
def test_hidden_width_has_a_floor(channels, expected_hidden):
    attention = ChannelAttention(channels, reduction=8, min_hidden=4)
    assert attention.hidden_channels == expected_hidden
    assert attention.squeeze.out_channels == expected_hidden
    assert ChannelAttention(16, reduction=8, min_hidden=1).hidden_channels == 2


@pytest.mark.parametrize("attention", [True, False])
def test_residual_block_can_be_the_identity(attention):
    torch.manual_seed(0)
    block = AttentionResBlock(8, attention=attention)
    with torch.no_grad():
        block.conv2.weight.zero_()
        block.conv2.bias.zero_()
    x = torch.randn(2, 8, 6, 6)
    assert torch.equal(block(x), x)


@pytest.mark.parametrize("latent_channels", [4, 1])
def test_autoencoder_shapes(latent_channels):
    torch.manual_seed(0)
    config = AutoencoderConfig(channels=(32, 64), latent_channels=latent_channels)
    assert config.latent_shape == (latent_channels, 8, 8)
    model = Autoencoder(config)
    x = torch.rand(2, 1, 32, 32) * 2 - 1
    z = model.encode(x)
    assert z.shape == (2, latent_channels, 8, 8)
    assert model.decode(z).shape == (2, 1, 32, 32)
    assert model(x).shape == x.shape


def test_channel_attention_costs_under_five_percent_of_the_parameters():
    with_attention = count(Autoencoder(AutoencoderConfig()))
    without = count(Autoencoder(AutoencoderConfig(attention=False)))
    assert without < with_attention
    assert (with_attention - without) / with_attention < 0.05


@pytest.mark.slow
def test_reconstruction_loss_falls():
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    images = smooth_images(16, 16, generator)
    model = Autoencoder(SMALL)
    before = reconstruction_loss(model, images).item()
    losses = train_autoencoder(
        model, images, num_steps=40, batch_size=16, lr=3e-3, warmup_steps=5, generator=generator, progress=False
    )
    assert len(losses) == 40
    after = reconstruction_loss(model, images).item()
    p = (images + 1) / 2
    floor = torch.nn.functional.binary_cross_entropy(p, p).item()   # the entropy of the grey pixels: a perfect decoder's loss
    assert after - floor < 0.5 * (before - floor), (before, after, floor)


def test_training_is_reproducible_from_the_generator():
    images = smooth_images(8, 16, torch.Generator().manual_seed(1))
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        model = Autoencoder(SMALL)
        runs.append(train_autoencoder(model, images, num_steps=3, batch_size=4, warmup_steps=1,
                                      generator=torch.Generator().manual_seed(2), progress=False))
    assert runs[0] == runs[1]


def test_latent_scale_gives_unit_std_and_decoding_inverts_it_exactly():
    torch.manual_seed(0)
    model = Autoencoder(SMALL)
    images = smooth_images(6, 16, torch.Generator().manual_seed(3))
    z = encode_images(model, images, batch_size=4)
    assert z.shape == (6, *SMALL.latent_shape) and z.dtype == torch.float32 and z.device.type == "cpu"
    scale = latent_scale(z)
    torch.testing.assert_close((z.double() * scale).std().item(), 1.0)  # float64 throughout: ~1e-15, inside the float64 defaults (1e-7)
    with torch.no_grad():
        expected = model.decode(z)
    # z.double() * scale, divided in float64 and rounded back, is z bit for bit.
    assert torch.equal(decode_latents(model, z.double() * scale, scale), expected)
    # From float32 latents the round trip is exact up to one rounding of z.
    torch.testing.assert_close(decode_latents(model, z * scale, scale), expected)


def test_latent_scale_rejects_degenerate_latents():
    with pytest.raises(ValueError, match="latents"):
        latent_scale(torch.ones(4, 4))
    with pytest.raises(ValueError, match="latents"):
        latent_scale(torch.empty(0))
    with pytest.raises(ValueError, match="latents"):
        latent_scale(torch.tensor([0.0, float("nan")]))


def test_latent_range_is_the_interval_the_latents_fill():
    z = torch.tensor([[0.5, -2.0], [3.0, 1.0]])
    assert latent_range(z) == (-2.0, 3.0)
    for bad in (torch.ones(4, 4), torch.empty(0), torch.tensor([0.0, float("nan")]), torch.tensor([0.0, float("inf")])):
        with pytest.raises(ValueError, match="latents must"):
            latent_range(bad)
    with pytest.raises(ValueError, match="latents must be a torch.Tensor, got list"):
        latent_range([0.0, 1.0])


def test_bad_inputs_name_the_argument():
    model = Autoencoder(SMALL)
    with pytest.raises(ValueError, match=r"x must have shape \(B, 1, 16, 16\), got shape \(2, 3, 16, 16\)"):
        model.encode(torch.zeros(2, 3, 16, 16))
    with pytest.raises(ValueError, match=r"x must have shape \(B, 1, 16, 16\)"):
        model.encode(torch.zeros(2, 1, 32, 32))
    with pytest.raises(ValueError, match=r"z must have shape \(B, 4, 4, 4\).*got shape \(2, 1, 4, 4\)"):
        model.decode(torch.zeros(2, 1, 4, 4))
    with pytest.raises(ValueError, match="z_scaled"):
        decode_latents(model, torch.zeros(4, 4, 4), 1.0)
    with pytest.raises(ValueError, match="scale"):
        decode_latents(model, torch.zeros(1, 4, 4, 4), 0.0)
    with pytest.raises(ValueError, match="channels"):
        ChannelAttention(0)
    generator = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="images must lie in"):
        train_autoencoder(model, torch.full((2, 1, 16, 16), 3.0), num_steps=1, generator=generator)
    with pytest.raises(ValueError, match="num_steps"):
        train_autoencoder(model, torch.zeros(2, 1, 16, 16), num_steps=0, generator=generator)
    with pytest.raises(ValueError, match="generator"):
        train_autoencoder(model, torch.zeros(2, 1, 16, 16), num_steps=1, generator=0)


def test_non_finite_loss_stops_training_at_its_step():
    model = Autoencoder(SMALL)
    with torch.no_grad():
        model.decoder[-1].bias.fill_(float("nan"))
    with pytest.raises(ValueError, match="non-finite at step 0"):
        train_autoencoder(model, torch.zeros(2, 1, 16, 16), num_steps=2, batch_size=2,
                          generator=torch.Generator().manual_seed(0), progress=False)


@pytest.mark.parametrize(
    "changes, match",
    [
        ({"image_size": 30}, "image_size must be divisible by 2\\*\\*len\\(channels\\) = 4"),
        ({"channels": ()}, "channels must be a non-empty tuple"),
        ({"channels": [32, 64]}, "channels must be a non-empty tuple"),
        ({"channels": (32, 0)}, "channels must be a non-empty tuple"),
        ({"latent_channels": 0}, "latent_channels must be an integer >= 1, got 0"),
        ({"in_channels": 1.0}, "in_channels must be an int"),
        ({"attention": 1}, "attention must be a bool"),
        ({"reduction": True}, "reduction must be an int"),
        ({"min_hidden": -1}, "min_hidden must be an int"),
    ],
)
def test_bad_config_values_are_named(changes, match):
    with pytest.raises(ValueError, match=match):
        AutoencoderConfig(**changes)
    with pytest.raises(ValueError, match=match):
        AutoencoderConfig().replace(**changes)


def test_config_round_trips_through_a_dict_and_rejects_unknown_keys():
    config = AutoencoderConfig(channels=(16, 32, 64), latent_channels=2, attention=False)
    values = config.to_dict()
    assert values["channels"] == [16, 32, 64]
    assert AutoencoderConfig.from_dict(json.loads(json.dumps(values))) == config
    assert config.latent_shape == (2, 4, 4)
    with pytest.raises(ValueError, match=r"unknown AutoencoderConfig fields: \['latent_size'\]"):
        AutoencoderConfig.from_dict({**values, "latent_size": 8})


def test_latent_model_must_match_the_latent_shape():
    config = AutoencoderConfig()
    check_latent_model(config, unet_in_channels=4, unet_image_size=8)
    with pytest.raises(ValueError, match=r"latent_shape \(4, 8, 8\).*unet_in_channels=1"):
        check_latent_model(config, unet_in_channels=1, unet_image_size=8)
    with pytest.raises(ValueError, match=r"latent_shape \(4, 8, 8\).*unet_image_size=32"):
        check_latent_model(config, unet_in_channels=4, unet_image_size=32)


def test_latent_diffusion_trains_and_samples_with_no_range_assumption():
    """The package's trainer, loss and samplers run unchanged on (B, 4, 8, 8) latents of any scale."""
    cfg = dh.TINY
    schedule = dh.make_schedule(cfg.diffusion.schedule, cfg.diffusion.T)
    space = dh.DataSpace((4, 8, 8))
    latents = 3.0 * torch.randn(64, 4, 8, 8, generator=torch.Generator().manual_seed(0))   # far outside [-1, 1]
    unet = dh.UNet(cfg.unet.replace(image_channels=4, image_size=8, patch_size=1, attention_resolutions=(4,)))
    state = dh.init_train_state(unet, cfg.train)
    dh.train(state, dh.ImageSet(latents, torch.zeros(64, dtype=torch.long)), space, schedule, cfg.train, diffusion=cfg.diffusion, progress=False)
    assert state.step == cfg.train.num_train_steps and all(math.isfinite(v) for v in state.history.train_loss)
    spec = dh.SamplerSpec("ddim", num_steps=3, clip_x0=False)
    z = dh.sample(state.ema.model, 4, space, schedule, spec, generator=torch.Generator().manual_seed(1))
    assert z.shape == (4, 4, 8, 8) and torch.isfinite(z).all() and z.abs().max() > 1   # not clamped to an image range
    with pytest.raises(ValueError, match="clip_x0=True needs data with a known range"):
        dh.sample(state.ema.model, 4, space, schedule, dh.SamplerSpec("ddim", num_steps=3))
    low, high = latent_range(latents)        # the range the training latents fill: the sampler clips x̂0 to it
    z = dh.sample(state.ema.model, 4, dh.DataSpace((4, 8, 8), (low, high)), schedule, dh.SamplerSpec("ddim", num_steps=3), generator=torch.Generator().manual_seed(1))
    assert low <= float(z.min()) and float(z.max()) <= high and z.abs().max() > 1
    with pytest.raises(ValueError, match=r"train_set.images must have shape \(N, 1, 32, 32\) for this data space"):
        dh.train(state, dh.ImageSet(latents, torch.zeros(64, dtype=torch.long)), dh.MNIST_PIXELS, schedule, cfg.train, diffusion=cfg.diffusion, progress=False)
