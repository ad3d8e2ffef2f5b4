"""scripts/export_onnx.py, which exports the networks of the "Try it" page (book/try_it.md): the ONNX
files agree with PyTorch, their card names the weights they came from, and sampler.json holds the
package's own schedule and timesteps, whatever the schedule and the prediction type.

Needs ``onnx`` and ``onnxruntime`` (requirements.txt); the page itself is tested in a browser by
book_tests/test_try_it.py.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import ddpm_helpers as dh
from ddpm_helpers.cards import Provenance

onnx = pytest.importorskip("onnx", reason="pip install onnx onnxruntime (requirements.txt)")
onnxruntime = pytest.importorskip("onnxruntime", reason="pip install onnx onnxruntime (requirements.txt)")

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("export_onnx", ROOT / "scripts" / "export_onnx.py")
export_onnx = importlib.util.module_from_spec(spec)
spec.loader.exec_module(export_onnx)

PROVENANCE = Provenance(date="2026-12-02", device="cpu", train_seconds=1.0, num_train_images=16, num_steps=1, trained_by="tests/test_export_onnx.py")


def check_sampler_numbers(numbers: dict, diffusion: dh.DiffusionConfig) -> None:
    """sampler.json must hold the package's tables and timesteps exactly: the page retypes nothing."""
    schedule = dh.make_schedule(diffusion.schedule, diffusion.T)
    assert numbers["T"] == schedule.T and numbers["diffusion"] == diffusion.to_dict()
    for name in ("alpha_bars", "sqrt_alpha_bars", "sqrt_one_minus_alpha_bars"):
        assert torch.equal(torch.tensor(numbers[name], dtype=torch.float32), getattr(schedule, name)), name
    for n, steps in numbers["timesteps"].items():
        assert steps == dh.SamplerSpec("ddim", num_steps=int(n)).steps(schedule.T, schedule)
    assert len(numbers["timesteps"]) == min(export_onnx.MAX_STEPS, schedule.T)
    assert numbers["clip_x0"] == list(dh.MNIST_PIXELS.value_range) and numbers["shape"] == list(dh.MNIST_PIXELS.shape)


def half_weights_are_the_shipped_ones(path: Path, model: torch.nn.Module) -> None:
    """Every float16 initializer of the file equals, as float32, a weight of the loaded model: storing in half lost nothing."""
    weights = {tuple(v.shape): [] for v in model.state_dict().values()}
    for value in model.state_dict().values():
        weights[tuple(value.shape)].append(value.float().numpy())
    for initializer in onnx.load(str(path)).graph.initializer:
        values = onnx.numpy_helper.to_array(initializer)
        if values.dtype == np.float16:
            candidates = weights.get(values.shape, []) + [w.reshape(values.shape) for ws in weights.values() for w in ws if w.size == values.size]
            assert any(np.array_equal(values.astype(np.float32), w) for w in candidates), initializer.name


@pytest.mark.slow
def test_the_shipped_models_export_and_agree_with_pytorch(tmp_path):
    card = export_onnx.export_all(tmp_path, log=lambda *_: None)
    numbers = json.loads((tmp_path / "sampler.json").read_text())
    sources = {"unconditional": "unconditional", "conditional": "conditional", "classifier": "mnist_classifier"}
    for name, source in sources.items():
        entry = card["models"][name]
        shipped = dh.classifier_card() if name == "classifier" else dh.pretrained_card(source)
        assert entry["source_sha256"] == shipped.sha256 and entry["sha256"] == export_onnx.sha256_of(tmp_path / entry["file"])
        assert entry["check"]["max_abs_difference"] <= export_onnx.TOLERANCE and entry["storage"]["float32_values"] == 0
        model = dh.load_classifier() if name == "classifier" else dh.load_pretrained(source).model
        half_weights_are_the_shipped_ones(tmp_path / entry["file"], model)
    for name in ("unconditional", "conditional"):
        check_sampler_numbers(numbers["models"][name], dh.load_pretrained(name).diffusion)
    assert numbers["models"]["conditional"]["null_class"] == 10 and numbers["models"]["unconditional"]["null_class"] is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["card.json", "classifier.onnx", "conditional.onnx", "sampler.json", "unconditional.onnx"]


def test_the_schedule_and_prediction_come_from_the_model(tmp_path, cfg):
    """Models trained for a cosine schedule of another T, one of them v-predicting: sampler.json follows
    each model's own diffusion config, and the exported v-network returns ε̂ (as dh.load_pretrained's EpsFromV)."""
    weights = tmp_path / "weights"
    diffusions = {"unconditional": dh.DiffusionConfig(T=200, schedule="cosine", prediction="v"),
                  "conditional": dh.DiffusionConfig(T=100, schedule="cosine", prediction="eps")}
    for name, diffusion in diffusions.items():
        torch.manual_seed(0)
        unet = cfg.unet if name == "unconditional" else cfg.unet.replace(num_classes=10)
        model = dh.UNet(unet)
        torch.nn.init.normal_(model.head[-1].weight, std=0.1)
        dh.save_pretrained(model, name, diffusion=diffusion, directory=weights, provenance=PROVENANCE, quality={}, train_config=None)
    card = export_onnx.export_all(tmp_path / "out", weights=weights, log=lambda *_: None)
    numbers = json.loads((tmp_path / "out" / "sampler.json").read_text())
    for name, diffusion in diffusions.items():
        check_sampler_numbers(numbers["models"][name], diffusion)
        assert card["models"][name]["source_sha256"] == dh.pretrained_card(name, weights).sha256
    loaded, _ = dh.load_pretrained("unconditional", directory=weights)
    assert isinstance(loaded, dh.EpsFromV)
    session = onnxruntime.InferenceSession(str(tmp_path / "out" / "unconditional.onnx"), providers=["CPUExecutionProvider"])
    x, t = torch.randn(3, 1, 32, 32, generator=torch.Generator().manual_seed(2)), torch.tensor([199, 57, 0])
    with torch.no_grad():
        expected = loaded(x, t).numpy()
    got = session.run(None, {"x_t": x.numpy(), "t": t.numpy()})[0]
    assert float(np.abs(got - expected).max()) <= export_onnx.TOLERANCE  # the bound of export_onnx.TOLERANCE's analysis


@pytest.mark.parametrize("argv, message", [
    (["--opset", "3"], "--opset must lie in [7, 23]"),
    (["--tolerance", "-1"], "--tolerance must be a positive finite number, got -1.0"),
    (["--tolerance", "nan"], "--tolerance must be a positive finite number, got nan"),
    (["--weights", "/no/such/folder"], "--weights must be a folder of models saved by dh.save_pretrained, got /no/such/folder"),
])
def test_bad_arguments_are_refused_by_name(argv, message, capsys):
    with pytest.raises(SystemExit):
        export_onnx.main(argv)
    assert message in capsys.readouterr().err


def test_out_must_be_a_folder(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    with pytest.raises(SystemExit):
        export_onnx.main(["--out", str(tmp_path / "file")])
    assert f"--out must be a folder, got the file {tmp_path / 'file'}" in capsys.readouterr().err


def test_a_folder_without_the_models_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="no pretrained model named 'unconditional'"):
        export_onnx.export_all(tmp_path / "out", weights=tmp_path, log=lambda *_: None)
