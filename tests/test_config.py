import dataclasses
import math
import random
import re

import numpy as np
import pytest
import torch

import ddpm_helpers as dh
from ddpm_helpers.checks import config_to_dict

COMPONENTS = ("data", "unet", "diffusion", "train", "judge")


def test_load_config_reads_the_environment(monkeypatch):
    monkeypatch.setenv("DDPM_MODE", "full")
    assert dh.load_config() is dh.FULL
    monkeypatch.setenv("DDPM_MODE", " Tiny ")
    assert dh.load_config() is dh.TINY
    monkeypatch.delenv("DDPM_MODE")
    assert dh.load_config().mode == "full"  # the default is the book's real run


def test_unknown_mode_names_the_variable():
    with pytest.raises(ValueError, match="DDPM_MODE.*'huge'"):
        dh.load_config("huge")


def test_tiny_and_full_share_every_field_name_and_differ_only_in_values():
    def names(config):  # field names, nested per component
        return {k: names(v) if dataclasses.is_dataclass(v) else None for k, v in vars(config).items()}

    assert names(dh.TINY) == names(dh.FULL)
    assert set(COMPONENTS) <= set(names(dh.TINY))
    assert dh.TINY.mode == "tiny" and dh.FULL.mode == "full"
    assert dh.TINY.train.lr_cooldown_fraction == 0.5 and dh.FULL.train.lr_cooldown_fraction == pytest.approx(1 / 3)  # a float literal of one third: rel 1e-6 forgives only how it is written


def test_the_config_is_per_component():
    assert isinstance(dh.TINY.data, dh.DataConfig) and isinstance(dh.TINY.unet, dh.UNetConfig)
    assert isinstance(dh.TINY.diffusion, dh.DiffusionConfig) and isinstance(dh.TINY.train, dh.TrainConfig)
    assert isinstance(dh.TINY.judge, dh.SamplerSpec)
    # knobs that only one chapter uses live in that chapter (cfg.pick), not in the Config
    for knob in ("race_steps", "guidance_scales", "num_overfit_steps", "publish_weights", "num_sampling_steps", "sampling_eta", "lr_cooldown_steps"):
        assert knob not in config_to_dict(dh.FULL) and knob not in config_to_dict(dh.FULL.train)


def test_pick_chooses_the_value_of_the_mode():
    assert dh.TINY.pick(tiny=(2, 4), full=(5, 10, 20)) == (2, 4)
    assert dh.FULL.pick(tiny=(2, 4), full=(5, 10, 20)) == (5, 10, 20)


@pytest.mark.parametrize("mode", ["tiny", "full"])
@pytest.mark.parametrize("component", COMPONENTS)
def test_components_round_trip_through_a_dict(mode, component):
    config = getattr(dh.load_config(mode), component)
    assert type(config).from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match=f"unknown {type(config).__name__} fields.*'colour'"):
        type(config).from_dict({**config.to_dict(), "colour": "red"})


def test_replace_validates_and_keeps_the_rest():
    cfg = dh.TINY.replace(diffusion=dh.TINY.diffusion.replace(T=100))
    assert cfg.diffusion.T == 100 and cfg.diffusion.schedule == dh.TINY.diffusion.schedule and cfg.train == dh.TINY.train
    with pytest.raises(ValueError, match="unet.image_size.*data.image_size"):
        dh.TINY.replace(unet=dh.TINY.unet.replace(image_size=16))
    with pytest.raises(ValueError, match="mode"):
        dh.TINY.replace(mode="huge")


BAD_VALUES = [
    # (config class, field, bad value)
    (dh.TrainConfig, "lr", -1e-3),
    (dh.TrainConfig, "lr", 0.0),
    (dh.TrainConfig, "lr", math.nan),
    (dh.TrainConfig, "lr", math.inf),
    (dh.TrainConfig, "lr", "2e-3"),
    (dh.TrainConfig, "grad_clip", 0.0),
    (dh.TrainConfig, "grad_clip", -1.0),
    (dh.TrainConfig, "batch_size", 0),
    (dh.TrainConfig, "batch_size", "64"),
    (dh.TrainConfig, "batch_size", True),
    (dh.TrainConfig, "batch_size", 64.0),
    (dh.TrainConfig, "num_train_steps", 0),
    (dh.TrainConfig, "num_train_steps", "18000"),
    (dh.TrainConfig, "warmup_steps", -1),
    (dh.TrainConfig, "warmup_steps", False),
    (dh.TrainConfig, "lr_cooldown_fraction", 1.5),
    (dh.TrainConfig, "lr_cooldown_fraction", -0.1),
    (dh.TrainConfig, "channels_last", 1),
    (dh.TrainConfig, "channels_last", "yes"),
    (dh.TrainConfig, "ema_decay", 1.0),
    (dh.TrainConfig, "ema_decay", -0.5),
    (dh.TrainConfig, "ema_decay", "0.995"),
    (dh.TrainConfig, "label_dropout", 1.0),
    (dh.TrainConfig, "label_dropout", -0.1),
    (dh.TrainConfig, "loss_type", "l3"),
    (dh.TrainConfig, "loss_type", "L2"),
    (dh.TrainConfig, "loss_weighting", "snr"),
    (dh.TrainConfig, "min_snr_gamma", 0.0),
    (dh.TrainConfig, "min_snr_gamma", math.nan),
    (dh.TrainConfig, "timestep_sampling", "log_normal"),
    (dh.TrainConfig, "timestep_logit_mean", math.inf),
    (dh.TrainConfig, "timestep_logit_std", -1.0),
    (dh.TrainConfig, "eval_every", 0),
    (dh.TrainConfig, "checkpoint_every", -5),
    (dh.TrainConfig, "num_val_loss_images", 0),
    (dh.TrainConfig, "seed", -1),
    (dh.TrainConfig, "seed", True),
    (dh.DataConfig, "source", "ftp"),
    (dh.DataConfig, "num_train_images", 0),
    (dh.DataConfig, "num_train_images", "512"),
    (dh.DataConfig, "num_val_images", 0),
    (dh.DataConfig, "num_val_images", True),
    (dh.DataConfig, "image_size", 0),
    (dh.DataConfig, "dataset", "cifar10"),
    (dh.DataConfig, "dataset", "Fashion-MNIST"),  # the name as written, not the title
    (dh.DiffusionConfig, "T", 1),
    (dh.DiffusionConfig, "T", "1000"),
    (dh.DiffusionConfig, "T", True),
    (dh.DiffusionConfig, "T", 1000.0),
    (dh.DiffusionConfig, "schedule", "quadratic"),
    (dh.DiffusionConfig, "prediction", "x0"),
]
PREFIX = {dh.TrainConfig: "train", dh.DataConfig: "data", dh.DiffusionConfig: "diffusion"}


@pytest.mark.parametrize("cls,field,value", BAD_VALUES, ids=[f"{PREFIX[c]}.{f}={v!r}" for c, f, v in BAD_VALUES])
def test_every_component_field_refuses_a_bad_value_by_name(cls, field, value):
    good = {dh.TrainConfig: dh.TINY.train, dh.DataConfig: dh.TINY.data, dh.DiffusionConfig: dh.TINY.diffusion}[cls]
    name = f"{PREFIX[cls]}.{field}"
    with pytest.raises(ValueError, match=rf"^{name} must .*got {re.escape(repr(value))}$"):
        good.replace(**{field: value})
    with pytest.raises(ValueError, match=rf"^{name} "):  # at construction too, not only in replace
        cls(**{**good.to_dict(), field: value})


def test_every_field_of_the_components_is_covered_by_the_table():
    for cls in PREFIX:
        checked = {f for c, f, _ in BAD_VALUES if c is cls}
        assert checked == {f.name for f in dataclasses.fields(cls)}, cls.__name__


def test_bad_config_values_are_refused():
    with pytest.raises(ValueError, match="data.source"):
        dh.TINY.data.replace(source="ftp")
    with pytest.raises(ValueError, match="multiple of 8"):
        dh.TINY.unet.replace(channels=12)


def test_seed_everything_reseeds_python_numpy_and_torch_and_returns_a_seeded_generator():
    def draws(seed):
        generator = dh.seed_everything(seed)
        return (random.random(), float(np.random.rand()), torch.rand(4).tolist(), torch.rand(4, generator=generator).tolist())

    with torch.random.fork_rng():  # leave the global torch RNG of later tests as it was
        state = random.getstate(), np.random.get_state()
        try:
            first, again, other = draws(3), draws(3), draws(4)
            assert dh.seed_everything(3).initial_seed() == 3
        finally:
            random.setstate(state[0])
            np.random.set_state(state[1])
    assert first == again  # each source repeats its draws after reseeding
    assert all(a != b for a, b in zip(first, other))  # and each differs for another seed


def test_components_must_have_their_own_types():
    with pytest.raises(ValueError, match="train must be a dh.TrainConfig, got dict"):
        dh.TINY.replace(train={"lr": 1e-3})
    with pytest.raises(ValueError, match="judge must be a dh.SamplerSpec, got str"):
        dh.TINY.replace(judge="ddim-100")
