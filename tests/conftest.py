"""Tests run in tiny mode on the CPU. Set before any kernel starts, so nbval's kernels inherit it."""

import os

os.environ["DDPM_MODE"] = "tiny"
os.environ.pop("DDPM_MNIST_ROOT", None)  # tests read the subset shipped with the package

import pytest  # noqa: E402
import torch  # noqa: E402

import ddpm_helpers as dh  # noqa: E402


@pytest.fixture
def cfg() -> dh.Config:
    return dh.load_config("tiny")


@pytest.fixture
def schedule() -> dh.NoiseSchedule:
    return dh.make_schedule("linear", 1000)


@pytest.fixture
def tiny_unet() -> dh.UNet:
    torch.manual_seed(0)
    return dh.UNet(channels=8, channel_mults=(1, 2), num_res_blocks=1, attention_resolutions=(16,))
