"""Bad inputs to sampling, the loss and the forward process get a clear error, one table per class of
issue 26: labels (class 2), the loss called by hand (class 4), DataSpace (class 6) and the ``step=``
hook's return (class 7). Each row is (what is wrong, a call that must fail, a phrase of its message):
a ``ValueError`` that names the argument and what was expected, never an error from inside torch
and never a silently wrong result. Below each table, valid inputs of the same kind that must work.
"""

from __future__ import annotations

import math

import pytest
import torch

import ddpm_helpers as dh

S = dh.make_schedule("linear", 1000)
NET = dh.UNetConfig(channels=8, channel_mults=(1, 2), num_res_blocks=1, attention_resolutions=())
with torch.random.fork_rng():  # seeded without changing the global RNG that other test files see
    torch.manual_seed(0)
    UNCOND, COND = dh.UNet(NET).eval(), dh.UNet(NET.replace(num_classes=10)).eval()
X = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1  # [-1, 1] images with negative values
T2 = torch.tensor([5, 900])
SPEC = dh.SamplerSpec("ddim", num_steps=3)


def draw(model=COND, space=dh.MNIST_PIXELS, spec=SPEC, **options):
    return dh.sample(model, 2, space, S, spec, generator=torch.Generator().manual_seed(0), **options)


def labels(*values, dtype=torch.long):
    return torch.tensor(values, dtype=dtype)


def with_value(x, value):
    x = x.clone()
    x[0, 0, 0, 0] = value
    return x


LABELS = [  # class 2: labels are checked whenever they are given, whatever the guidance scale
    ("label 11, guidance 0", lambda: draw(y=labels(11, 1), guidance_scale=0.0), r"y must hold labels in \[0, 9\]"),
    ("label -1, guidance 0", lambda: draw(y=labels(-1, 1), guidance_scale=0.0), r"y must hold labels in \[0, 9\]"),
    ("label 11, guidance 1", lambda: draw(y=labels(11, 1)), r"y must hold labels in \[0, 9\]"),
    ("the null class asked for", lambda: draw(y=labels(10, 1), guidance_scale=3.0), "null class 10 is not a label to ask for"),
    ("labels, guidance 3, unconditional model", lambda: draw(UNCOND, y=labels(1, 2), guidance_scale=3.0), "the model is unconditional"),
    ("labels, guidance 0, unconditional model", lambda: draw(UNCOND, y=labels(1, 2), guidance_scale=0.0), "the model is unconditional"),
    ("labels, guidance 1, unconditional model", lambda: draw(UNCOND, y=labels(1, 2)), "the model is unconditional"),
    ("float labels", lambda: draw(y=torch.tensor([1.0, 2.0]), guidance_scale=3.0), "integer tensor of labels"),
    ("boolean labels", lambda: draw(y=torch.tensor([True, False])), "integer tensor of labels"),
    ("labels (2, 1)", lambda: draw(y=labels(1, 2).view(2, 1)), "one label per sample"),
    ("a list of labels", lambda: draw(y=[1, 2]), "one label per sample"),
    ("guided_eps: label 11, guidance 0", lambda: dh.guided_eps(COND, X, T2, labels(11, 1), 0.0), r"labels in \[0, 9\]"),
    ("guided_eps: unconditional model, guidance 2", lambda: dh.guided_eps(UNCOND, X, T2, labels(1, 1), 2.0), "the model is unconditional"),
    ("guided_eps: guidance on a model without num_classes", lambda: dh.guided_eps(lambda x, t, y=None: x, X, T2, labels(1, 1), 2.0), "has no num_classes"),
    ("iterate_sampler: label 12", lambda: list(dh.iterate_sampler(COND, X, dh.MNIST_PIXELS, S, SPEC, y=labels(12, 0))), r"labels in \[0, 9\]"),
    ("loss: label 11 (10 is the null class)", lambda: dh.ddpm_loss(COND, X, S, y=labels(11, 1)), r"labels in \[0, 10\] \(10 is the null class\)"),
    ("loss: labels for an unconditional model", lambda: dh.ddpm_loss(UNCOND, X, S, y=labels(1, 1)), "the model is unconditional"),
]

LOSS_BY_HAND = [  # class 4: the loss and the forward process check their data against its DataSpace
    ("loss: an infinite pixel", lambda: dh.ddpm_loss(UNCOND, with_value(X, math.inf), S), "x0 must be finite"),
    ("loss: a NaN pixel", lambda: dh.ddpm_loss(UNCOND, with_value(X, math.nan), S), "x0 must be finite"),
    ("loss: [0, 255] floats", lambda: dh.ddpm_loss(UNCOND, (X + 1) * 127.5, S), r"x0 must lie in \[-1, 1\] .*x / 127.5 - 1"),
    ("loss: [0, 1] images", lambda: dh.ddpm_loss(UNCOND, (X + 1) / 2, S), r"look like \[0, 1\] images; convert them with dh.to_model_range"),
    ("loss: one image without a batch dimension", lambda: dh.ddpm_loss(UNCOND, X[0], S), r"x0 must be a batch of images \(B, C, H, W\).*x0\[None\]"),
    ("loss: infinite eps", lambda: dh.ddpm_loss(UNCOND, X, S, eps=torch.full_like(X, math.inf)), "eps must be finite"),
    ("loss: t out of range", lambda: dh.ddpm_loss(UNCOND, X, S, t=torch.tensor([0, 1000])), r"t must hold timesteps in \[0, 999\]"),
    ("loss: latents outside their space's shape", lambda: dh.ddpm_loss(UNCOND, X, S, space=dh.DataSpace((4, 8, 8))), r"x0 must have shape \(N, 4, 8, 8\)"),
    ("loss: a tuple as the space", lambda: dh.ddpm_loss(UNCOND, X, S, space=((1, 32, 32), None)), "space must be a dh.DataSpace"),
    ("forward: (C, H, W) without a batch dimension", lambda: dh.q_sample(X[0], torch.tensor([5]), torch.randn(1, 32, 32), S), r"x0 must be a batch of images \(B, C, H, W\)"),
    ("forward: one (H, W) image", lambda: dh.q_sample(X[0, 0], torch.full((32,), 5), torch.randn(32, 32), S), r"x0 must be a batch of images \(B, C, H, W\)"),
    ("forward: [0, 1] images", lambda: dh.q_sample((X + 1) / 2, T2, torch.randn_like(X), S), r"look like \[0, 1\] images"),
    ("forward: an infinite x0", lambda: dh.q_sample(with_value(X, -math.inf), T2, torch.randn_like(X), S), "x0 must be finite"),
    ("forward: a NaN eps", lambda: dh.q_sample(X, T2, with_value(torch.randn_like(X), math.nan), S), "eps must be finite"),
]

DATA_SPACES = [  # class 6: a DataSpace is checked when it is made
    ("reversed range (1, -1)", lambda: dh.DataSpace((1, 32, 32), (1.0, -1.0)), "value_range must be None .* low < high"),
    ("empty range (0, 0)", lambda: dh.DataSpace((1, 32, 32), (0.0, 0.0)), "value_range must be None .* low < high"),
    ("one-sided range (-1, inf)", lambda: dh.DataSpace((1, 32, 32), (-1.0, math.inf)), "finite numbers"),
    ("NaN range", lambda: dh.DataSpace((1, 32, 32), (math.nan, math.nan)), "finite numbers"),
    ("three numbers as a range", lambda: dh.DataSpace((1, 32, 32), (-1.0, 0.0, 1.0)), "a pair"),
    ("a tensor range", lambda: dh.DataSpace((1, 32, 32), torch.tensor([-1.0, 1.0])), "a pair"),
    ("a boolean in the range", lambda: dh.DataSpace((1, 32, 32), (False, True)), "finite numbers"),
    ("shape given as an int", lambda: dh.DataSpace(32), "shape must be a non-empty tuple of positive ints"),
    ("an empty shape", lambda: dh.DataSpace(()), "shape must be a non-empty tuple of positive ints"),
    ("a zero in the shape", lambda: dh.DataSpace((1, 0, 32)), "shape must be a non-empty tuple of positive ints"),
    ("a negative size", lambda: dh.DataSpace((1, -32, 32)), "shape must be a non-empty tuple of positive ints"),
    ("a float size", lambda: dh.DataSpace((1, 32.0, 32)), "shape must be a non-empty tuple of positive ints"),
    ("replaced by a bad range", lambda: dh.MNIST_PIXELS._replace(value_range=(1.0, -1.0)), "low < high"),
    ("a plain tuple where a space belongs", lambda: draw(UNCOND, space=((1, 32, 32), (-1.0, 1.0))), "space must be a dh.DataSpace"),
    ("a space whose shape is not x_T's", lambda: list(dh.iterate_sampler(UNCOND, X, dh.DataSpace((4, 8, 8)), S, SPEC.replace(clip_x0=False))), r"x_T must have shape \(B, 4, 8, 8\)"),
]


def hook(kind: str):
    """DDIM through a step= function that goes wrong in one way."""

    def step(x_t, t, t_prev, eps_hat, schedule, **options):
        result = dh.ddim_step(x_t, t, t_prev, eps_hat, schedule, **options)
        last = int(t_prev[0]) == -1
        if kind == "narrow at the last step" and last:
            return dh.Step(result.x_prev[:, :, :16], result.x0_hat[:, :, :16])
        if kind == "x0_hat of another shape":
            return dh.Step(result.x_prev, result.x0_hat[:1])
        if kind == "all infinite":
            return dh.Step(torch.full_like(result.x_prev, math.inf), result.x0_hat)
        if kind == "NaN at the last step" and last:
            return dh.Step(result.x_prev * math.nan, result.x0_hat)
        if kind == "a bare tensor":
            return result.x_prev
        if kind == "three values":
            return (*result, result.x0_hat)
        if kind == "integer state":
            return dh.Step(result.x_prev.long(), result.x0_hat)
        if kind == "a plain pair":
            return tuple(result)
        return result

    return step


STEP_HOOKS = [  # class 7: what a step= function returns is checked (type and shape each step; finiteness once)
    ("wrong-shaped state at the last step", lambda: draw(UNCOND, step=hook("narrow at the last step")), r"step must return x_prev as a floating tensor of x_t's shape \(2, 1, 32, 32\)"),
    ("x0_hat of another shape", lambda: draw(UNCOND, step=hook("x0_hat of another shape")), "step must return x0_hat as a floating tensor"),
    ("an all-infinite state", lambda: draw(UNCOND, step=hook("all infinite")), r"step= produced a non-finite state .* at t=999"),
    ("a NaN state at the last step", lambda: draw(UNCOND, step=hook("NaN at the last step")), r"step= produced a non-finite state .* at t=0"),
    ("a bare tensor instead of a Step", lambda: draw(UNCOND, step=hook("a bare tensor")), r"step must return dh.Step\(x_prev, x0_hat\), got Tensor"),
    ("three values", lambda: draw(UNCOND, step=hook("three values")), r"step must return dh.Step\(x_prev, x0_hat\)"),
    ("an integer state", lambda: draw(UNCOND, step=hook("integer state")), "step must return x_prev as a floating tensor"),
    ("iterate_sampler: an infinite state", lambda: list(dh.iterate_sampler(UNCOND, X, dh.MNIST_PIXELS, S, SPEC, step=hook("all infinite"))), "non-finite state"),
    ("a network whose eps_hat is NaN", lambda: draw(lambda x, t, y=None: x * math.nan), "model returned a non-finite eps_hat at t=999"),
    ("a network whose eps_hat is +inf (clipping hid it)", lambda: draw(lambda x, t, y=None: x * 0 + math.inf), "model returned a non-finite eps_hat"),
    ("a network whose eps_hat has another shape", lambda: draw(lambda x, t, y=None: x[:, :, :8]), r"model must return eps_hat of x_t's shape"),
    ("iterate_sampler: an infinite x_T", lambda: list(dh.iterate_sampler(UNCOND, with_value(X, math.inf), dh.MNIST_PIXELS, S, SPEC)), "x_T must be finite"),
]

TABLE = LABELS + LOSS_BY_HAND + DATA_SPACES + STEP_HOOKS


@pytest.mark.parametrize("what,call,phrase", TABLE, ids=[row[0] for row in TABLE])
def test_bad_input_is_refused_by_name(what, call, phrase):
    with pytest.raises(ValueError, match=phrase):
        call()


# valid input of the same kinds must still work --------------------------------------------------


def test_labels_of_any_integer_dtype_give_the_int64_samples():
    expected = draw(y=labels(1, 2), guidance_scale=3.0)
    for dtype in (torch.uint8, torch.int8, torch.int16, torch.int32):
        torch.testing.assert_close(draw(y=labels(1, 2, dtype=dtype), guidance_scale=3.0), expected, rtol=0, atol=0)
    loss = lambda y: dh.ddpm_loss(COND, X, S, y=y, t=T2, eps=torch.ones_like(X))  # noqa: E731
    torch.testing.assert_close(loss(labels(1, 10, dtype=torch.uint8)), loss(labels(1, 10)), rtol=0, atol=0)  # 10: the null class


def test_a_model_without_num_classes_still_takes_labels_unguided():
    seen = []

    def model(x_t, t, y=None):
        seen.append(y.tolist())
        return torch.zeros_like(x_t)

    dh.sample(model, 2, dh.MNIST_PIXELS, S, SPEC, y=labels(3, 4, dtype=torch.int32))
    assert seen == [[3, 4]] * 3


def test_data_passed_on_purpose_with_its_space_is_accepted():
    zero = lambda x_t, t, y=None: torch.zeros_like(x_t)  # noqa: E731
    eps = torch.randn(X.shape, generator=torch.Generator().manual_seed(1))
    grey_and_white = torch.cat([torch.zeros(1, 1, 32, 32), torch.ones(1, 1, 32, 32)])  # flat images: legal [-1, 1] data
    for x0, space in (
        (grey_and_white, None),
        ((X + 1) / 2, dh.DataSpace((1, 32, 32))),  # light images, on purpose: a space with no range
        (3 * eps, dh.DataSpace((1, 32, 32))),  # latent-like data
        (torch.randn(2, 5), dh.DataSpace((5,))),  # vectors
        (X, dh.MNIST_PIXELS),
    ):
        loss = dh.ddpm_loss(zero, x0, S, t=T2, eps=eps[:, 0, 0, :5] if x0.ndim == 2 else eps, space=space)
        # a zero network's loss is the mean of eps²: the same ≤ 2048 float32 squares summed in two
        # orders differ by at most n·u = 2048 · 6e-8 ≈ 1.2e-4 relative (the worst case of recursive summation)
        expected = (eps[:, 0, 0, :5] if x0.ndim == 2 else eps).square().mean()
        torch.testing.assert_close(loss, expected, rtol=1.3e-4, atol=0)
        x_t = dh.q_sample(x0, T2, eps[:, 0, 0, :5] if x0.ndim == 2 else eps, S, space=space)
        assert x_t.shape == x0.shape and bool(torch.isfinite(x_t).all())


def test_valid_data_spaces_are_made_and_normalised():
    space = dh.DataSpace([4, 8, 8], (-3, 3))
    assert space == dh.DataSpace((4, 8, 8), (-3.0, 3.0)) and isinstance(space.shape, tuple) and isinstance(space.value_range[0], float)
    assert dh.DataSpace(torch.Size([1, 32, 32])) == dh.DataSpace((1, 32, 32), None)
    assert dh.MNIST_PIXELS._replace(value_range=None) == dh.DataSpace((1, 32, 32))
    assert dh.DataSpace((1, 1, 1), (0.0, 1e-3)).value_range == (0.0, 1e-3)  # any finite low < high


def test_a_correct_step_hook_gives_the_methods_own_samples_bit_for_bit():
    for kind in ("correct", "a plain pair"):
        torch.testing.assert_close(draw(UNCOND, step=hook(kind)), draw(UNCOND), rtol=0, atol=0)
