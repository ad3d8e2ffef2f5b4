"""Bad inputs get a clear error at the package's public boundary, one table per class of mistake.

Each row is (what is wrong, a call that must fail, the error type, a phrase of its message). The
message must name the argument and what was expected; nothing may fail deep inside torch, numpy or
PIL, and nothing may return a silently wrong result. The classes follow the reliability issue:
shapes that would broadcast, data in the wrong range, non-finite values, saved files that are
damaged, corrupt data files, metrics that can be fooled, an interrupted training run.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch

import ddpm_helpers as dh

S = dh.make_schedule(dh.TINY.diffusion.schedule, dh.TINY.diffusion.T)  # the schedule cfg.diffusion describes
TINY_NET = dh.UNetConfig(channels=8, channel_mults=(1, 2), num_res_blocks=1, attention_resolutions=(8,))
with torch.random.fork_rng():  # seeded here without changing the global RNG that other test files see
    torch.manual_seed(0)
    UNCOND = dh.UNet(TINY_NET)
    COND = dh.UNet(TINY_NET.replace(num_classes=10))
    X = torch.rand(4, 1, 32, 32) * 2 - 1
T4 = torch.zeros(4, dtype=torch.long)
CLASSIFIER = dh.load_classifier()


def unit(shape=(4, 1, 32, 32)):
    return torch.rand(shape)  # [0, 1]: the common mistake


SHAPES = [
    ("labels (1,) for a batch of 4, loss", lambda: dh.ddpm_loss(COND, X, S, y=torch.tensor([3])), r"y must have shape \(4,\), one label per item"),
    ("labels (3,) for a batch of 4, loss", lambda: dh.ddpm_loss(COND, X, S, y=torch.tensor([3, 1, 2])), r"y must have shape \(4,\), one label per item"),
    ("labels (1,) for a batch of 4, network", lambda: COND(X, T4, torch.tensor([3])), r"y must have shape \(4,\), one label per item"),
    ("labels (4, 1)", lambda: COND(X, T4, torch.zeros(4, 1, dtype=torch.long)), r"shape \(4,\), one label per item, got shape \(4, 1\)"),
    ("float labels", lambda: COND(X, T4, torch.zeros(4)), "integer tensor of labels"),
    ("label 11 (10 is the null class)", lambda: COND(X, T4, torch.tensor([0, 1, 2, 11])), r"labels in \[0, 10\]"),
    ("labels for an unconditional network", lambda: UNCOND(X, T4, torch.zeros(4, dtype=torch.long)), "unconditional"),
    ("labels (1,) for 2 samples", lambda: dh.sample(COND, 2, dh.MNIST_PIXELS, S, dh.SamplerSpec("ddim", num_steps=2), y=torch.tensor([1])), r"shape \(2,\)"),
    ("t (B, 1), loss", lambda: dh.ddpm_loss(UNCOND, X, S, t=torch.zeros(4, 1, dtype=torch.long)), r"t must have shape \(4,\)"),
    ("t (B, 1), network", lambda: UNCOND(X, torch.zeros(4, 1, dtype=torch.long)), r"t must have shape \(4,\)"),
    ("t (B, 1), embedding", lambda: dh.timestep_embedding(torch.zeros(4, 1), 16), r"t must be a \(B,\) tensor"),
    ("28x28 images to the classifier", lambda: dh.metrics.classify(CLASSIFIER, torch.rand(4, 1, 28, 28) * 2 - 1), r"shape \(N, 1, 32, 32\)"),
    ("3-channel images to SSIM", lambda: dh.metrics.ssim(torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1), r"grey images of shape \(N, 1, H, W\)"),
    ("3-channel images to PSNR", lambda: dh.metrics.psnr(torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1), r"grey images of shape \(N, 1, H, W\)"),
    ("an empty batch, loss", lambda: dh.ddpm_loss(UNCOND, torch.zeros(0, 1, 32, 32), S), "at least one item"),
    ("an empty batch, forward process", lambda: dh.q_sample(torch.zeros(0, 1, 32, 32), torch.zeros(0, dtype=torch.long), torch.zeros(0, 1, 32, 32), S), "at least one item"),
    ("labels (3,) for logits (4, 10)", lambda: dh.metrics.class_accuracy(torch.randn(4, 10), torch.tensor([1, 2, 3])), r"shape \(4,\)"),
]

RANGES = [
    ("[0, 1] images to the classifier", lambda: dh.metrics.classify(CLASSIFIER, unit()), "look like \\[0, 1\\] images"),
    ("[0, 1] images to PSNR", lambda: dh.metrics.psnr(unit(), unit()), "look like \\[0, 1\\] images"),
    ("[0, 1] images to SSIM", lambda: dh.metrics.ssim(unit(), unit()), "look like \\[0, 1\\] images"),
    ("[0, 255] images to the classifier", lambda: dh.metrics.classify(CLASSIFIER, unit() * 255), r"must lie in \[-1, 1\]"),
    ("[0, 1] images to training", lambda: dh.train(dh.init_train_state(dh.UNet(TINY_NET), dh.TINY.train), dh.ImageSet(unit((16, 1, 32, 32)), torch.zeros(16, dtype=torch.long)),
                                                  dh.MNIST_PIXELS, S, dh.TINY.train, diffusion=dh.TINY.diffusion, progress=False), "look like \\[0, 1\\] images"),
    ("[0, 1] images to bits/dim", lambda: dh.elbo.nll_bits_per_dim(UNCOND, unit((2, 1, 32, 32)), S, num_timesteps=2), "look like \\[0, 1\\] images"),
    ("[0, 1] images to the prior KL", lambda: dh.elbo.prior_kl(unit((2, 1, 32, 32)), S), "look like \\[0, 1\\] images"),
    ("label 10 of 10 classes", lambda: dh.metrics.class_accuracy(torch.randn(4, 10), torch.tensor([10, 1, 2, 3])), r"labels in \[0, 9\]"),
    ("label -1", lambda: dh.metrics.class_accuracy(torch.randn(4, 10), torch.tensor([-1, 1, 2, 3])), r"labels in \[0, 9\]"),
    ("KID with subsets of 1", lambda: dh.metrics.kid(torch.randn(50, 8), torch.randn(50, 8), subset_size=1), "subset_size must be an integer >= 2"),
    ("KID with no subsets", lambda: dh.metrics.kid(torch.randn(50, 8), torch.randn(50, 8), num_subsets=0), "num_subsets must be an integer >= 1"),
]

NON_FINITE = [
    ("a NaN pixel to the classifier", lambda: dh.metrics.classify(CLASSIFIER, X.clone().index_put_((torch.tensor(0),), torch.tensor(math.nan))), "must be finite"),
    ("a NaN frame to save_gif", lambda: dh.save_gif([torch.full((1, 1, 32, 32), math.nan)], "/tmp/never.gif"), r"frames\[0\] must be finite"),
    ("a NaN guidance scale", lambda: dh.sample(COND, 2, dh.MNIST_PIXELS, S, dh.SamplerSpec("ddim", num_steps=2), y=torch.tensor([1, 2]), guidance_scale=math.nan), "guidance_scale must be a finite number"),
    ("an infinite guidance scale", lambda: dh.guided_eps(COND, X, T4, torch.zeros(4, dtype=torch.long), math.inf), "guidance_scale must be a finite number"),
]


@pytest.mark.parametrize("what,call,phrase", SHAPES + RANGES + NON_FINITE, ids=[row[0] for row in SHAPES + RANGES + NON_FINITE])
def test_bad_input_is_refused_by_name(what, call, phrase):
    with pytest.raises(ValueError, match=phrase):
        call()


def test_a_single_frame_gif_is_written(tmp_path):
    path = dh.save_gif([torch.zeros(2, 1, 32, 32)], tmp_path / "still.gif")
    assert path.stat().st_size > 0


@pytest.mark.slow
def test_a_collapsed_class_histogram_is_flagged():
    noise = torch.randn(200, 1, 32, 32, generator=torch.Generator().manual_seed(0)).clamp(-1, 1)
    reference = dh.metrics.classify(CLASSIFIER, dh.load_mnist("test", dh.TINY).images[:200]).features
    report = dh.metrics.quality_report(CLASSIFIER, noise, reference)
    assert report.collapsed and "WARNING: collapsed" in report.summary()
    real = dh.metrics.quality_report(CLASSIFIER, dh.load_mnist("test", dh.TINY).images[200:400], reference)
    assert not real.collapsed and "WARNING" not in real.summary()


# damaged saved files -------------------------------------------------------------------------------

def _checkpoint(tmp_path):
    cfg = dh.TINY
    state = dh.init_train_state(dh.UNet(TINY_NET), cfg.train)
    path = tmp_path / "run.pt"
    dh.save_checkpoint(path, state, cfg.diffusion, cfg.train)
    return path, cfg


@pytest.mark.parametrize("offset_share", [0.3, 0.5, 0.7, 0.9])
def test_a_checkpoint_with_flipped_bytes_is_refused(tmp_path, offset_share):
    path, cfg = _checkpoint(tmp_path)
    data = bytearray(path.read_bytes())
    start = int(len(data) * offset_share)
    for i in range(start, start + 64):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="damaged|corrupt"):
        dh.load_checkpoint(path, dh.UNet(TINY_NET), cfg.diffusion, cfg.train)


def test_a_checkpoint_without_its_checksum_is_refused(tmp_path):
    path, cfg = _checkpoint(tmp_path)
    payload = torch.load(path, weights_only=True)
    del payload["content_sha256"]
    torch.save(payload, path)
    with pytest.raises(ValueError, match="no content checksum"):
        dh.load_checkpoint(path, dh.UNet(TINY_NET), cfg.diffusion, cfg.train)


def test_shipped_weights_and_cards_are_cross_checked(tmp_path):
    for name in ("unconditional", "conditional"):
        shutil.copy(dh.WEIGHTS_DIR / f"{name}.pt", tmp_path)
        shutil.copy(dh.WEIGHTS_DIR / f"{name}.json", tmp_path)
    shutil.copy(tmp_path / "conditional.pt", tmp_path / "unconditional.pt")  # another model's weights under this name
    with pytest.raises(ValueError, match="unconditional.pt does not match the SHA-256 its card records"):
        dh.load_pretrained("unconditional", directory=tmp_path)
    (tmp_path / "conditional.json").write_text("{not json")
    with pytest.raises(ValueError, match="card conditional.json of pretrained model 'conditional' is not valid JSON"):
        dh.load_pretrained("conditional", directory=tmp_path)


def test_saving_weights_beyond_half_precision_is_refused(tmp_path):
    model = dh.UNet(TINY_NET)
    with torch.no_grad():
        model.head[-1].weight[0, 0, 0, 0] = 1e6
    with pytest.raises(ValueError, match="beyond half precision's range"):
        dh.save_pretrained(model, "broken", diffusion=dh.DiffusionConfig(), directory=tmp_path, provenance=dh.cards.Provenance(None, None, None, None, None, "test"), quality={}, train_config=None)
    with torch.no_grad():
        model.head[-1].weight[0, 0, 0, 0] = math.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        dh.save_pretrained(model, "broken", diffusion=dh.DiffusionConfig(), directory=tmp_path, provenance=dh.cards.Provenance(None, None, None, None, None, "test"), quality={}, train_config=None)
    assert list(tmp_path.iterdir()) == []  # nothing half-written


# corrupt data files -------------------------------------------------------------------------------

def _copy_mnist(tmp_path: Path) -> Path:
    source = Path(dh.data.BUNDLED_ROOT)
    shutil.copytree(source, tmp_path / "mnist")
    return tmp_path / "mnist"


@pytest.mark.parametrize("damage", ["random bytes", "empty file", "labels truncated", "label 200"])
def test_damaged_mnist_files_name_the_files(tmp_path, damage):
    root = _copy_mnist(tmp_path)
    raw = root / "MNIST" / "raw"
    images, labels = raw / "t10k-images-idx3-ubyte", raw / "t10k-labels-idx1-ubyte"
    if damage == "random bytes":
        images.write_bytes(torch.randint(0, 256, (5000,), generator=torch.Generator().manual_seed(0)).to(torch.uint8).numpy().tobytes())
    elif damage == "empty file":
        labels.write_bytes(b"")
    elif damage == "labels truncated":  # header says 64 labels, and 64 are there, for 1,000 images
        data = bytearray(labels.read_bytes()[:8 + 64])
        data[4:8] = (64).to_bytes(4, "big")
        labels.write_bytes(bytes(data))
    else:
        data = bytearray(labels.read_bytes())
        data[8] = 200
        labels.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte"):
        dh.load_mnist("test", dh.TINY, root=root)


# an interrupted training run ----------------------------------------------------------------------

@pytest.mark.slow
def test_an_interrupt_between_steps_keeps_every_loss(monkeypatch):
    cfg = dh.TINY
    data = dh.load_mnist("train", cfg)
    state = dh.init_train_state(dh.UNet(TINY_NET), cfg.train, num_steps=6)
    real_step, calls = dh.training.train_step, []

    def step_then_interrupt(*args, **kwargs):
        loss = real_step(*args, **kwargs)
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # after the step, before train() sees its loss
        return loss

    monkeypatch.setattr(dh.training, "train_step", step_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        dh.train(state, data, dh.MNIST_PIXELS, S, cfg.train, diffusion=cfg.diffusion, progress=False)
    monkeypatch.undo()
    assert state.step == 3 and len(state.history.train_loss) == 3  # every step taken has its loss
    dh.train(state, data, dh.MNIST_PIXELS, S, cfg.train, diffusion=cfg.diffusion, progress=False)  # and the run simply continues
    assert state.step == 6 and len(state.history.train_loss) == 6


def test_an_interrupt_inside_a_step_is_detected(monkeypatch):
    cfg = dh.TINY
    data = dh.load_mnist("train", cfg)
    state = dh.init_train_state(dh.UNet(TINY_NET), cfg.train, num_steps=6)
    dh.train(state, data, dh.MNIST_PIXELS, S, cfg.train, diffusion=cfg.diffusion, num_steps=2, progress=False)
    real_update = state.ema.update

    def interrupted_update(model):
        raise KeyboardInterrupt  # after the optimizer step, before the EMA and the step count

    state.ema.update = interrupted_update
    with pytest.raises(KeyboardInterrupt):
        dh.train(state, data, dh.MNIST_PIXELS, S, cfg.train, diffusion=cfg.diffusion, progress=False)
    state.ema.update = real_update
    assert state.step == 2 and len(state.history.train_loss) == 2
    with pytest.raises(RuntimeError, match="interrupted in the middle of step 3.*Resume from the last checkpoint"):
        dh.train(state, data, dh.MNIST_PIXELS, S, cfg.train, diffusion=cfg.diffusion, progress=False)
