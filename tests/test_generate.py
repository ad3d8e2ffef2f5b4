"""dh.generate and ``python -m ddpm_helpers sample``: the shipped models in one call (issue 25, item 7)."""

import subprocess
import sys

import pytest
import torch
from PIL import Image

import ddpm_helpers as dh
from ddpm_helpers.__main__ import main


@pytest.mark.slow  # samples from the shipped models
def test_the_same_seed_gives_the_same_digits_and_another_seed_others():
    first = dh.generate("conditional", digits=[7, 7, 3], sampler="dpm-solver++-sde", steps=3, seed=0)
    again = dh.generate("conditional", digits=[7, 7, 3], sampler="dpm-solver++-sde", steps=3, seed=0)
    other = dh.generate("conditional", digits=[7, 7, 3], sampler="dpm-solver++-sde", steps=3, seed=1)
    assert torch.equal(first.images, again.images)  # one generator drives every draw: bit-identical on one machine
    assert (first.images - other.images).abs().max() > 0.5  # another x_T: different digits (order-1 pixel differences)
    assert first.images.shape == (3, 1, 32, 32) and first.images.dtype == torch.float32
    assert first.images.min() >= -1 and first.images.max() <= 1
    assert first.digits == [7, 7, 3] and first.model == "conditional" and first.spec == dh.SamplerSpec("dpm-solver++-sde", num_steps=3)


@pytest.mark.slow  # samples from the shipped models
def test_the_conditional_model_draws_the_digits_asked_for():
    """Guidance is what makes the label count: the shipped classifier must read most of the asked digits."""
    result = dh.generate("conditional", digits=list(range(10)), sampler="ddim", steps=10, guidance_scale=3.0, seed=0)
    predicted = dh.metrics.classify(dh.load_classifier(), result.images).logits.argmax(1)
    # the card's class accuracy at s = 1 is 97.9% with 100 steps; with 10 steps and s = 3, 8 of 10 leaves room for a slip or two
    assert int((predicted == torch.arange(10)).sum()) >= 8


@pytest.mark.slow  # samples from the shipped models
def test_unconditional_and_latent_models_take_a_number_of_images():
    pixels = dh.generate("unconditional", num_images=2, sampler="ddim", steps=2, seed=0)
    latent = dh.generate("latent", num_images=2, sampler="ddim", steps=2, seed=0)
    for result in (pixels, latent):
        assert result.images.shape == (2, 1, 32, 32) and result.digits is None
        assert result.images.min() >= -1 and result.images.max() <= 1
    # the latent path decodes: the same latents through the model's own autoencoder give these images
    model, diffusion, autoencoder, scale, space = dh.load_latent_model("latent")
    assert latent.spec.clip_x0 == (space.value_range is not None)  # clipped to its training latents' range where the model records it
    schedule = dh.make_schedule(diffusion.schedule, diffusion.T)
    z = dh.sample(model, 2, space, schedule, latent.spec, generator=torch.Generator().manual_seed(0), batch_size=125)
    torch.testing.assert_close(latent.images, dh.latent.decode_latents(autoencoder, z, scale).clamp(-1, 1), rtol=0, atol=0)


@pytest.mark.parametrize("call,message", [
    (dict(model="nope", digits=[1]), r"model must be the name of a shipped diffusion model, one of \['conditional', 'fashion_conditional', 'fashion_unconditional', 'latent', 'unconditional'\], got 'nope'"),
    (dict(model="autoencoder", num_images=2), r"model must be the name of a shipped diffusion model.*got 'autoencoder'"),
    (dict(model="conditional", digits=[7, 10]), r"digits must be integers from 0 to 9 .*got \[10\]"),
    (dict(model="conditional", digits=[-1]), r"digits must be integers from 0 to 9 .*got \[-1\]"),
    (dict(model="conditional", digits=[True]), r"digits must be integers from 0 to 9"),
    (dict(model="conditional", digits=7), r"digits must be a non-empty list of digits, e.g. \[7, 7, 3\], got 7"),
    (dict(model="conditional", digits=[]), r"digits must be a non-empty list"),
    (dict(model="conditional"), r"digits: the model 'conditional' is class-conditional; ask for digits"),
    (dict(model="conditional", digits=[1, 2], num_images=3), r"num_images must equal len\(digits\) = 2"),
    (dict(model="unconditional", digits=[7]), r"digits: the model 'unconditional' is not class-conditional"),
    (dict(model="latent", digits=[7]), r"digits: the model 'latent' is not class-conditional"),
    (dict(model="unconditional"), r"num_images: give how many images"),
    (dict(model="unconditional", num_images=0), r"num_images must be"),
    (dict(model="unconditional", num_images=-3), r"num_images must be"),
    (dict(model="unconditional", num_images=2, steps=0), r"steps must be"),
    (dict(model="unconditional", num_images=2, sampler="euler"), r"sampler must be one of \['ddpm', 'ddim', 'dpm-solver\+\+', 'dpm-solver\+\+-sde'\].*got 'euler'"),
    (dict(model="unconditional", num_images=2, sampler="ddpm"), r"steps: the sampler 'ddpm' visits every one of the T steps"),
    (dict(model="unconditional", num_images=2, guidance_scale=3.0), r"guidance_scale applies to a class-conditional model only"),
    (dict(model="conditional", digits=[1], guidance_scale=-1.0), r"guidance_scale must be"),
    (dict(model="conditional", digits=[1], seed=-1), r"seed must be"),
])
def test_bad_requests_are_refused_by_name(call, message):
    with pytest.raises(ValueError, match=message):
        dh.generate(**call)


def test_the_command_line_writes_a_png_grid(tmp_path, capsys):
    out = tmp_path / "sevens.png"
    assert main(["sample", "--model", "conditional", "--digit", "7", "--num", "3", "--steps", "2", "--nrow", "2", "--out", str(out)]) == 0
    with Image.open(out) as image:
        assert image.format == "PNG" and image.mode == "L"
        assert image.size == (2 + 2 * 34, 2 + 2 * 34)  # 2 columns and 2 rows of 32-pixel digits with 2-pixel borders
    assert "digits [7, 7, 7]" in capsys.readouterr().out


@pytest.mark.parametrize("argv,message", [
    (["--model", "conditional", "--digit", "12"], "digits must be integers from 0 to 9"),
    (["--model", "unconditional", "--digit", "7"], "is not class-conditional"),
    (["--model", "unconditional", "--num", "0"], "num_images must be"),
    (["--model", "nope", "--num", "2"], "model must be the name of a shipped diffusion model"),
    (["--model", "conditional", "--digit", "7", "--sampler", "euler"], "sampler must be one of"),
    (["--model", "conditional", "--digit", "7", "--num", "0"], "--num must be a positive number"),
])
def test_the_command_line_refuses_bad_arguments_with_status_2(tmp_path, capsys, argv, message):
    out = tmp_path / "x.png"
    with pytest.raises(SystemExit) as stop:
        main(["sample", *argv, "--steps", "2", "--out", str(out)])
    assert stop.value.code == 2 and message in capsys.readouterr().err and not out.exists()


@pytest.mark.slow  # samples from the shipped models in a subprocess
def test_python_dash_m_runs_the_command(tmp_path):
    out = tmp_path / "two.png"
    done = subprocess.run([sys.executable, "-m", "ddpm_helpers", "sample", "--model", "unconditional", "--num", "2", "--steps", "2", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
