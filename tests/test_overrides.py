"""Config.with_overrides: the one parser of every script's and benchmark's --set."""

import pytest

import ddpm_helpers as dh


def test_values_are_read_as_their_fields_types():
    cfg = dh.TINY.with_overrides([
        "train.lr=3e-3", "diffusion.schedule=cosine", "seed=1", "unet.channel_mults=[1, 2]", "unet.attention_resolutions=()",
        "judge.eta=none", "train.channels_last=false", "data.num_train_images=None", "diffusion.prediction=v", "train.num_train_steps=18_000",
    ])
    assert cfg.train.lr == 3e-3 and cfg.diffusion == dh.DiffusionConfig(T=1000, schedule="cosine", prediction="v") and cfg.seed == 1
    assert cfg.unet.channel_mults == (1, 2) and cfg.unet.attention_resolutions == () and cfg.judge.eta is None
    assert cfg.train.channels_last is False and cfg.data.num_train_images is None and cfg.train.num_train_steps == 18_000
    assert type(cfg.train.batch_size) is int and type(cfg.train.lr) is float
    # everything not named keeps its value
    assert cfg.replace(train=dh.TINY.train, diffusion=dh.TINY.diffusion, unet=dh.TINY.unet, judge=dh.TINY.judge, data=dh.TINY.data, seed=0) == dh.TINY


def test_a_component_is_rebuilt_once_so_its_checks_see_every_change():
    # each alone would break Config's check that the U-Net and the data agree on the image size
    cfg = dh.TINY.with_overrides(["unet.image_size=28", "unet.attention_resolutions=7", "data.image_size=28"])
    assert cfg.unet.image_size == cfg.data.image_size == 28
    assert dh.TINY.with_overrides([]) == dh.TINY


@pytest.mark.parametrize("override, match", [
    ("train.lr=abc", r"train.lr must be a number, got 'abc'"),
    ("train.batch_size=1.5", r"train.batch_size must be an integer, got '1.5'"),
    ("train.channels_last=yes", r"train.channels_last must be true or false, got 'yes'"),
    ("unet.channel_mults=1,x", r"each item of unet.channel_mults must be an integer, got 'x'"),
    ("judge.num_steps=many", r"judge.num_steps must be an integer or none, got 'many'"),
    ("train.foo=1", r"unknown field 'train.foo'; fields of train: \[.*'lr'"),
    ("lr=0.1", r"unknown field 'lr' \(did you mean train.lr\?\)"),
    ("model.width=3", r"unknown component 'model'; components: \['data', 'unet', 'diffusion', 'train', 'judge'\]"),
    ("mode=full", r"unknown field 'mode'"),
    ("seed", r"an override must read component.field=value"),
    ("diffusion.schedule=quadratic", r"diffusion.schedule must be one of \('linear', 'cosine'\), got 'quadratic'"),
    ("train.lr=-1", r"train.lr must be a finite number in \(0, inf\], got -1.0"),
    ("judge.method=euler", r"method"),
])
def test_bad_overrides_are_refused_by_name(override, match):
    with pytest.raises(ValueError, match=match):
        dh.TINY.with_overrides([override])


def test_overrides_must_be_a_list_of_strings():
    with pytest.raises(ValueError, match="overrides must be a list of 'component.field=value' strings, got str"):
        dh.TINY.with_overrides("train.lr=1e-3")
