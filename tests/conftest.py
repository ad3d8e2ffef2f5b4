"""Fixtures of the unit tests; the tiny mode itself is set by the root conftest.py."""

import pytest
import torch

import ddpm_helpers as dh


@pytest.fixture
def cfg() -> dh.Config:
    return dh.load_config("tiny")


@pytest.fixture
def linear_schedule() -> dh.NoiseSchedule:
    """Ho et al.'s linear schedule, for tests whose expected numbers are worked out for it."""
    return dh.make_schedule("linear", 1000)


@pytest.fixture
def schedule() -> dh.NoiseSchedule:
    """The tiny configuration's schedule: the one its diffusion config names, so cfg and schedule agree."""
    return dh.make_schedule(dh.TINY.diffusion.schedule, dh.TINY.diffusion.T)


@pytest.fixture
def tiny_unet() -> dh.UNet:
    torch.manual_seed(0)
    return dh.UNet(dh.UNetConfig(channels=8, channel_mults=(1, 2), num_res_blocks=1, attention_resolutions=(16,), patch_size=1))
