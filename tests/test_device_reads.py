"""Validation runs once per call, never once per step: a check that reads a tensor's value back to the
host (on a GPU, a wait for the device) goes through ``dh.checks.read_back``, which counts its calls.

The counts are pinned exactly. Before the per-step maths was made bare (issue 25, item 6), a
20-step DDPM run read the device 20 times (``torch.equal`` per step), a guided conditional run 40
times (the network checked its labels per step), and training 2 reads per step (the loss checked
its timesteps), 4 per step for a conditional model.
"""

from __future__ import annotations

import pytest
import torch

import ddpm_helpers as dh
from ddpm_helpers.checks import count_device_reads, read_back

NET = dh.UNetConfig(channels=8, channel_mults=(1, 2), num_res_blocks=1, attention_resolutions=())
T1000 = dh.make_schedule("linear", 1000)
T20 = dh.make_schedule("cosine", 20)  # DDPM visits every step: 20 steps need T = 20


def _net(num_classes=None):
    torch.manual_seed(0)
    return dh.UNet(NET.replace(num_classes=num_classes)).eval()


def test_the_counter_counts_each_read_once_and_only_inside_its_block():
    with count_device_reads() as outer:
        assert read_back(torch.tensor([1, 2])) == [1, 2]
        with count_device_reads() as inner:
            read_back(torch.tensor(3.0))
            assert inner.count == 1
        read_back(torch.tensor(True))
    read_back(torch.tensor(0))  # after the block: not counted any more
    assert (outer.count, inner.count) == (3, 1)


# (what runs, reads for the whole call). Unconditional: one read at the end (did every eps_hat and
# state stay finite?). Conditional: one more, the labels' range, checked once before the loop.
SAMPLING = [
    ("ddpm, 20 steps", dict(spec=dh.SamplerSpec("ddpm"), schedule=T20), 1),
    ("ddim, 20 steps", dict(spec=dh.SamplerSpec("ddim", num_steps=20)), 1),
    ("dpm-solver++, 20 steps", dict(spec=dh.SamplerSpec("dpm-solver++", num_steps=20)), 1),
    ("dpm-solver++-sde, 20 karras steps", dict(spec=dh.SamplerSpec("dpm-solver++-sde", num_steps=20, spacing="karras")), 1),
    ("conditional ddim, 20 steps, guidance 3", dict(spec=dh.SamplerSpec("ddim", num_steps=20), y=[3, 7], guidance_scale=3.0), 2),
    ("conditional ddpm, 20 steps, guidance 3", dict(spec=dh.SamplerSpec("ddpm"), schedule=T20, y=[3, 7], guidance_scale=3.0), 2),
    ("conditional ddim, 20 steps, guidance 0", dict(spec=dh.SamplerSpec("ddim", num_steps=20), y=[3, 7], guidance_scale=0.0), 2),
    ("conditional ddim, 20 steps, 2 chunks", dict(spec=dh.SamplerSpec("ddim", num_steps=20), y=[3, 7], guidance_scale=3.0, batch_size=1), 2),
    ("a step= function wrapping dh.ddpm_step", dict(spec=dh.SamplerSpec("ddpm"), schedule=T20, step=dh.ddpm_step), 1),
]


@pytest.mark.parametrize("what,options,expected", SAMPLING, ids=[row[0] for row in SAMPLING])
def test_sampling_reads_the_device_a_fixed_number_of_times(what, options, expected):
    options = dict(options)
    spec, schedule = options.pop("spec"), options.pop("schedule", T1000)
    if "y" in options:
        options["y"] = torch.tensor(options["y"])
    model = _net(10 if "y" in options else None)
    steps = []
    model.register_forward_hook(lambda *_: steps.append(1))
    with count_device_reads() as reads:
        samples = dh.sample(model, 2, dh.MNIST_PIXELS, schedule, spec, generator=torch.Generator().manual_seed(0), **options)
    assert samples.shape == (2, 1, 32, 32)
    assert len(steps) == (40 if options.get("batch_size") == 1 else 20)  # 20 network calls per chunk: the loop really ran
    assert reads.count == expected


def test_iterate_sampler_adds_one_read_for_its_given_x_T():
    x_T = torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    with count_device_reads() as reads:
        states = list(dh.iterate_sampler(_net(10), x_T, dh.MNIST_PIXELS, T1000, dh.SamplerSpec("ddim", num_steps=20), y=torch.tensor([1, 2]), guidance_scale=2.0))
    assert len(states) == 20 and reads.count == 3  # x_T finite, labels in range, and the finiteness at the end


def _train(num_steps: int, num_classes: int | None) -> int:
    cfg = dh.TINY
    config = cfg.train.replace(batch_size=4, eval_every=1000, checkpoint_every=1000)
    data = dh.load_mnist("train", cfg, num_images=16)
    state = dh.init_train_state(_net(num_classes).train(), config, num_steps=num_steps)
    schedule = dh.make_schedule(cfg.diffusion.schedule, cfg.diffusion.T)
    with count_device_reads() as reads:
        dh.train(state, data, dh.MNIST_PIXELS, schedule, config, diffusion=cfg.diffusion, progress=False)
    assert state.step == num_steps and len(state.history.train_loss) == num_steps
    return reads.count


@pytest.mark.parametrize("num_classes,expected", [(None, 1), (10, 2)], ids=["unconditional", "conditional"])
def test_training_reads_the_device_once_per_call_whatever_the_number_of_steps(num_classes, expected):
    # the data once (finite, in [-1, 1], not [0, 1] images: one read); a conditional model's labels once more
    assert _train(10, num_classes) == expected
    assert _train(3, num_classes) == expected


def test_checks_by_hand_still_read_values_once_per_call():
    """The public functions check their inputs each time they are called by hand."""
    x0 = torch.rand(2, 1, 32, 32) * 2 - 1
    t = torch.tensor([5, 900])
    with count_device_reads() as reads:
        dh.q_sample(x0, t, torch.randn_like(x0), T1000)
    assert reads.count == 3  # x0 (finite, range), eps finite, t in range
    with count_device_reads() as reads:
        dh.ddpm_step(x0, t, t - 1, torch.randn_like(x0), T1000)
    assert reads.count == 3  # t in range, t_prev < t, t_prev = t - 1
