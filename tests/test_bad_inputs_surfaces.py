"""Bad input to the book's other surfaces is refused by name, and valid input is never refused.

Issue 26, classes 5 (the autoencoder path takes [0, 1] images), 9 (the checklist's blind spots),
10 (metric and record edge cases) and 11 (valid input refused); class 3 (HTML) is in
tests/test_html_escaping.py. One table of bad inputs per class, each row (what is wrong, a call
that must fail, a phrase of its message), as in tests/test_bad_inputs.py; beside it a table of
valid inputs near the boundary, each with what its result must satisfy.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

import ddpm_helpers as dh

S = dh.make_schedule("linear", 1000)
MNIST = dh.load_mnist("test", dh.TINY).images[:16]  # [-1, 1], background -1
UNIT, BYTES = (MNIST + 1) / 2, (MNIST + 1) * 127.5  # the two common mistakes
WHITE, GREY = torch.ones(2, 1, 32, 32), torch.zeros(2, 1, 32, 32)  # flat images: legal in [-1, 1]
LIGHT = 0.5 + 0.5 * UNIT  # legal [-1, 1] images nowhere darker than mid-grey (the rule takes them for [0, 1])
with torch.random.fork_rng():  # seeded without changing the global RNG that other test files see
    torch.manual_seed(0)
    AE = dh.Autoencoder(dh.AutoencoderConfig(channels=(8, 16), latent_channels=2))
    NET = dh.UNet(dh.UNetConfig(channels=8, channel_mults=(1, 2), num_res_blocks=1, attention_resolutions=(8,))).eval()
    OTHER_NET = dh.UNet(dh.UNetConfig(channels=16, channel_mults=(1, 2), num_res_blocks=1, attention_resolutions=(8,))).eval()
CLASSIFIER = dh.load_classifier()


def generator():
    return torch.Generator().manual_seed(0)


class Cropped(nn.Module):
    """A network whose output lost half its width (a wrong up-sampling path)."""

    def __init__(self):
        super().__init__()
        self.net = NET

    def forward(self, x, t, y=None):
        return self.net(x, t)[..., :16]


class Flattened(Cropped):
    def forward(self, x, t, y=None):
        return self.net(x, t).flatten(1)


class Pair(Cropped):
    def forward(self, x, t, y=None):
        return self.net(x, t), None


class ZeroNoise(nn.Module):
    """A network with no parameters and no buffers: it predicts ε̂ = 0."""

    def forward(self, x, t, y=None):
        return torch.zeros_like(x)


def run(**changes):
    arguments = dict(model=NET, schedule=S, images=MNIST) | changes
    return dh.diagnostics.run_checklist(arguments.pop("model"), arguments.pop("schedule"), arguments.pop("images"), **arguments)


def record(**changes):
    arguments = dict(chapter="test", cfg=dh.TINY, device="cpu", uses=("data",), results={"fid": 1.5}) | changes
    return dh.provenance.record(arguments.pop("chapter"), arguments.pop("cfg"), arguments.pop("device"), **arguments)


AUTOENCODER_BAD = [  # class 5
    ("encode_images, [0, 1] digits", lambda: dh.latent.encode_images(AE, UNIT), r"images must lie in \[-1, 1\] with black at -1.*look like \[0, 1\] images; convert them with dh.to_model_range"),
    ("encode_images, [0, 255] digits", lambda: dh.latent.encode_images(AE, BYTES), r"images must lie in \[-1, 1\] \(these look like \[0, 255\] pixels: convert them with x / 127.5 - 1\), got values in \[0, 255\]"),
    ("encode_images, uniform noise in [0, 1]", lambda: dh.latent.encode_images(AE, torch.rand(4, 1, 32, 32)), r"look like \[0, 1\] images"),
    ("encode_images, a NaN pixel", lambda: dh.latent.encode_images(AE, MNIST.clone().index_fill_(0, torch.tensor([1]), math.nan)), "images must be finite"),
    ("encode_images, not an autoencoder", lambda: dh.latent.encode_images(NET, MNIST), "model must be an Autoencoder, got UNet"),
    ("Autoencoder.encode, [0, 1] digits", lambda: AE.encode(UNIT), r"x must lie in \[-1, 1\] with black at -1.*look like \[0, 1\] images"),
    ("reconstruction_loss, [0, 1] digits", lambda: dh.reconstruction_loss(AE, UNIT), r"x must lie in \[-1, 1\] with black at -1.*dh.to_model_range"),
    ("reconstruction_loss, [0, 255] digits", lambda: dh.reconstruction_loss(AE, BYTES), r"x must lie in \[-1, 1\] \(these look like \[0, 255\] pixels"),
    ("reconstruction_loss, an empty batch", lambda: dh.reconstruction_loss(AE, MNIST[:0]), "x must hold at least one image"),
    ("train_autoencoder, [0, 1] digits", lambda: dh.train_autoencoder(AE, UNIT, num_steps=1, batch_size=4, generator=generator(), progress=False), r"images must lie in \[-1, 1\] with black at -1.*look like \[0, 1\] images"),
    ("train_autoencoder, [0, 255] digits", lambda: dh.train_autoencoder(AE, BYTES, num_steps=1, batch_size=4, generator=generator(), progress=False), r"\[0, 255\] pixels"),
]

AUTOENCODER_VALID = [  # (what, call, what the result must satisfy)
    ("encode_images, [-1, 1] digits", lambda: dh.latent.encode_images(AE, MNIST), lambda z: z.shape == (16, 2, 8, 8)),
    ("encode_images, all white", lambda: dh.latent.encode_images(AE, WHITE), lambda z: z.shape == (2, 2, 8, 8)),
    ("encode_images, all mid-grey", lambda: dh.latent.encode_images(AE, GREY), lambda z: z.shape == (2, 2, 8, 8)),
    ("encode_images, grey beside white", lambda: dh.latent.encode_images(AE, torch.cat([GREY[:1], WHITE[:1]])), lambda z: z.shape == (2, 2, 8, 8)),
    ("encode_images, all black", lambda: dh.latent.encode_images(AE, -WHITE), lambda z: z.shape == (2, 2, 8, 8)),
    ("reconstruction_loss, all white", lambda: dh.reconstruction_loss(AE, WHITE), lambda loss: math.isfinite(loss.item())),
    ("train_autoencoder, [-1, 1] digits", lambda: dh.train_autoencoder(AE, MNIST, num_steps=2, batch_size=4, generator=generator(), progress=False), lambda losses: len(losses) == 2),
    ("train_autoencoder, all white", lambda: dh.train_autoencoder(AE, WHITE, num_steps=1, batch_size=2, generator=generator(), progress=False), lambda losses: len(losses) == 1),
]

CHECKLIST_BAD = [  # class 9
    ("output cropped to (B, 1, 32, 16)", lambda: run(model=Cropped().eval()), r"model\(x_t, t\) must return eps_hat, a tensor of x_t's shape \(4, 1, 32, 32\), got shape \(4, 1, 32, 16\)"),
    ("output flattened to (B, 1024)", lambda: run(model=Flattened().eval()), r"got shape \(4, 1024\)"),
    ("output a tuple", lambda: run(model=Pair().eval()), r"must return eps_hat, .* got a tuple"),
    ("an empty batch", lambda: run(images=MNIST[:0]), "images must hold at least one item, got an empty batch"),
    ("an empty batch, data range alone", lambda: dh.diagnostics.check_data_range(MNIST[:0]), "images must hold at least one item"),
    ("an EMA of another architecture", lambda: run(ema_model=OTHER_NET), r"ema_model must have model's architecture .*parameter 0 is"),
    ("an initial model of another architecture", lambda: run(ema_model=NET, initial_model=OTHER_NET), "initial_model must have model's architecture"),
    ("an EMA of a parameter-free model", lambda: run(model=ZeroNoise(), ema_model=ZeroNoise()), "model has no parameters: there are no weights to average"),
    ("an initial model without an EMA", lambda: run(initial_model=NET), "initial_model is only used by the EMA check: pass ema_model too"),
    ("step='ddim'", lambda: run(step="ddim"), r"step must be a function such as dh.ddpm_step, got the string 'ddim'; a step by name is dh.STEPS\['ddim'\]"),
    ("strided_step='ddim'", lambda: run(strided_step="ddim"), "strided_step must be a function such as dh.ddim_step, got the string 'ddim'"),
    ("forward='q_sample'", lambda: run(forward="q_sample"), "forward must be a function such as dh.q_sample, got the string 'q_sample'"),
    ("step=None", lambda: run(step=None), "step must be a function such as dh.ddpm_step, got NoneType"),
    ("a model that is a function", lambda: run(model=lambda x, t: x), "model must be an nn.Module"),
    ("a schedule that is a tensor", lambda: run(schedule=S.betas), "schedule must be a NoiseSchedule"),
    ("autocast_dtype=torch.int8", lambda: run(autocast_dtype=torch.int8), "autocast_dtype must be None or a floating torch.dtype"),
]

RECORDS_BAD = [  # class 10
    ("FID of 0-dimensional features", lambda: dh.metrics.fid(torch.randn(10, 0), torch.randn(10, 0)), r"features_a must have at least one feature dimension \(D >= 1\), got shape \(10, 0\)"),
    ("FID of a NaN feature", lambda: dh.metrics.fid(torch.randn(20, 2).index_fill_(0, torch.tensor([3]), math.nan), torch.randn(20, 2)), "features_a must be finite"),
    ("KID of 0-dimensional features", lambda: dh.metrics.kid(torch.randn(10, 0), torch.randn(10, 0)), "at least one feature dimension"),
    ("class shares of no samples", lambda: dh.metrics.class_histogram(torch.zeros(0, 10)), r"logits must hold at least one sample and two classes, got shape \(0, 10\)"),
    ("confident fraction of no samples", lambda: dh.metrics.confident_fraction(torch.zeros(0, 10)), "at least one sample"),
    ("accuracy of no samples", lambda: dh.metrics.class_accuracy(torch.zeros(0, 10), torch.zeros(0, dtype=torch.long)), "at least one sample"),
    ("confidences of 1-D logits", lambda: dh.metrics.confidences(torch.zeros(10)), r"logits must be a floating tensor of shape \(N, C\)"),
    ("class shares of NaN logits", lambda: dh.metrics.class_histogram(torch.full((4, 10), math.nan)), "logits must be finite"),
    ("class shares of 12 columns as 10 classes", lambda: dh.metrics.class_histogram(torch.randn(4, 12)), "logits must have num_classes = 10 columns.*pass num_classes=12"),
    ("a NaN result", lambda: record(results={"fid": math.nan}), r"results\['fid'\] must be a finite number \(strict JSON has no NaN or infinity\), got nan"),
    ("an infinite result, nested", lambda: record(results={"race": [{"fid": -math.inf}]}), r"results\['race'\]\[0\]\['fid'\] must be a finite number"),
    ("a numpy float32 result", lambda: record(results={"fid": np.float32(1.5)}), r"results must hold JSON values .* but results\['fid'\] is a float32"),
    ("a tensor result", lambda: record(results={"fid": torch.tensor(1.5)}), r"but results\['fid'\] is a Tensor.*x.item\(\)"),
    ("an int key", lambda: record(results={1: 2.0}), "results must have string keys"),
    ("results as a list", lambda: record(results=[1.0]), "results must be a dict"),
    ("a torch.device", lambda: record(device=torch.device("cpu")), r"device must be a string describing the device, e.g. dh.describe_device\(device\), got device"),
    ("uses as one string", lambda: record(uses="data"), "uses must be a collection of config field names"),
    ("a reference of 200.5 samples", lambda: dh.evaluation.real_reference(MNIST, MNIST, 200.5), "num_samples must be an integer >= 1, got 200.5"),
    ("a reference from a list", lambda: dh.evaluation.real_reference([MNIST], MNIST, 200), r"train_images must be a torch.Tensor of shape \(B, C, H, W\), got list"),
]

RANGES_BAD = [  # class 11's other side: what the metrics must still refuse
    ("PSNR of [0, 1] digits", lambda: dh.metrics.psnr(UNIT, UNIT.flip(0)), r"reference must lie in \[-1, 1\] with black at -1.*value_range=\(-1, 1\)"),
    ("SSIM of [0, 1] digits", lambda: dh.metrics.ssim(UNIT, UNIT.flip(0)), r"look like \[0, 1\] images"),
    ("PSNR of [0, 255] digits", lambda: dh.metrics.psnr(BYTES, BYTES.flip(0)), r"\[0, 255\] pixels"),
    ("PSNR, values outside a stated range", lambda: dh.metrics.psnr(MNIST, MNIST, value_range=(0, 1)), r"reference must lie in \[0, 1\]"),
    ("PSNR, a reversed range", lambda: dh.metrics.psnr(MNIST, MNIST, value_range=(1, -1)), r"value_range must be a tuple \(low, high\) of finite numbers with low < high"),
    ("PSNR, a NaN range", lambda: dh.metrics.psnr(MNIST, MNIST, value_range=(0, math.nan)), "value_range must be a tuple"),
    ("SSIM, a range as a list", lambda: dh.metrics.ssim(MNIST, MNIST, value_range=[-1, 1]), "value_range must be a tuple"),
    ("classify, [0, 1] digits", lambda: dh.metrics.classify(CLASSIFIER, UNIT), r"look like \[0, 1\] images"),
    ("classify, no images", lambda: dh.metrics.classify(CLASSIFIER, MNIST[:0]), "images must hold at least one image"),
]

ALL_BAD = AUTOENCODER_BAD + CHECKLIST_BAD + RECORDS_BAD + RANGES_BAD


@pytest.mark.parametrize("what,call,phrase", ALL_BAD, ids=[row[0] for row in ALL_BAD])
def test_bad_input_is_refused_by_name(what, call, phrase):
    with pytest.raises(ValueError, match=phrase):
        call()


@pytest.mark.parametrize("what,call,holds", AUTOENCODER_VALID, ids=[row[0] for row in AUTOENCODER_VALID])
def test_valid_images_reach_the_autoencoder(what, call, holds):
    assert holds(call())


# class 11: valid pairs the old [0, 1] heuristic refused ----------------------------------------------

def test_uniform_grey_against_white_is_scored():
    # grey 0 and white +1 are pixels 0.5 and 1: MSE = 0.25, PSNR = 10 log10(1 / 0.25) = 6.0206 dB
    # (float64 throughout; the only rounding is log10's, far below 1e-12)
    assert float(dh.metrics.psnr(GREY[:1], WHITE[:1])[0]) == pytest.approx(10 * math.log10(4), abs=1e-12)
    # SSIM of two flat images: no variance, so only the luminance term (2·0.5·1 + C1)/(0.5² + 1² + C1), C1 = 0.01²
    c1 = 0.01**2
    assert float(dh.metrics.ssim(GREY[:1], WHITE[:1])[0]) == pytest.approx((2 * 0.5 + c1) / (0.25 + 1 + c1), abs=1e-6)
    assert dh.metrics.psnr(WHITE[:1], WHITE[:1]).isinf().all()
    assert dh.metrics.classify(CLASSIFIER, WHITE).logits.shape == (2, 10)


def test_a_stated_range_is_checked_exactly_and_changes_no_number():
    noisy = (MNIST + 0.2 * torch.randn(MNIST.shape, generator=generator())).clamp(-1, 1)
    for metric in (dh.metrics.psnr, dh.metrics.ssim):
        default = metric(MNIST, noisy)
        # (x - (-1)) / 2 and (x + 1) / 2 are the same IEEE operations: bit for bit the same numbers
        assert torch.equal(metric(MNIST, noisy, value_range=(-1, 1)), default)
        # [0, 1] images with their range stated: (x + 1)/2 rounded once to float32 (relative error 6e-8 per
        # pixel) moves PSNR by about 4.3 · 2 · 6e-8 dB and SSIM by a few 1e-8, so 1e-5 is loose
        torch.testing.assert_close(metric((MNIST + 1) / 2, (noisy + 1) / 2, value_range=(0, 1)), default, rtol=0, atol=1e-5)
    light = dh.metrics.psnr(LIGHT, LIGHT.flip(0), value_range=(-1, 1))  # legal light images, passed on purpose
    assert light.shape == (16,) and torch.isfinite(light).all()


# class 9: what the checklist must still run on ----------------------------------------------------------

@pytest.mark.slow
def test_the_checklist_runs_a_network_without_parameters():
    report = run(model=ZeroNoise().eval())  # ε̂ = 0: runs on the images' device; no check depends on its weights
    assert report["finite outputs"].passed and report["network in eval mode"].passed
    oracle = dh.diagnostics.PerPixelGaussian(MNIST, S).eval()  # buffers only
    assert run(model=oracle).passed


@pytest.mark.slow
def test_data_in_the_wrong_range_is_diagnosed_not_refused():
    report = run(images=BYTES)
    assert report.failed == ["data range"], str(report)


def test_a_report_names_its_checks_when_asked_for_another():
    report = dh.diagnostics.Report((dh.diagnostics.check_data_range(MNIST),))
    with pytest.raises(KeyError, match="no check named 'data rnage' in this report; its checks: \\['data range'\\]"):
        report["data rnage"]


def test_an_ema_of_a_wrapped_network_is_the_same_architecture():
    class Wrapped(nn.Module):
        def __init__(self):
            super().__init__()
            self.model = NET

    assert dh.diagnostics.check_ema(NET, Wrapped()).value == 0.0  # names differ by a prefix, shapes agree


# class 10: valid edge cases -------------------------------------------------------------------------------

def test_kid_with_one_subset_has_no_spread():
    a, b = torch.randn(50, 8, generator=generator()), torch.randn(50, 8, generator=generator()) + 1
    mean, spread = dh.metrics.kid(a, b, num_subsets=1, subset_size=20, generator=generator())
    assert math.isfinite(mean) and math.isnan(spread)  # unknown, not a claim of certainty
    mean2, spread2 = dh.metrics.kid(a, b, num_subsets=2, subset_size=20, generator=generator())
    assert math.isfinite(mean2) and spread2 > 0  # two subsets of 20 from 50 differ, so their values do


def test_records_of_plain_json_values_are_accepted():
    results = {"fid": 1.5, "n": 1000, "ok": True, "none": None, "race": [{"sampler": "ddim", "steps": (10, 20)}]}
    assert record(results=results).results == results
    assert record(uses=["data", "diffusion"]).uses == ["data", "diffusion"]
    assert record(uses=(name for name in ("data",))).uses == ["data"]  # a generator is read once
