"""Export the book's shipped networks to ONNX for the in-browser page ("Try it", book/try_it.md).

    python scripts/export_onnx.py                 # into _extra/try_it/models/ (the book build copies it to the site)
    python scripts/export_onnx.py --out DIR       # anywhere else
    python scripts/export_onnx.py --weights DIR   # models saved by dh.save_pretrained elsewhere (the tests)

What it writes, from whatever ``ddpm_helpers/weights/`` holds now (run it again after new weights
are published; nothing here is committed):

* ``unconditional.onnx``, ``conditional.onnx``: the ε-networks, as ``dh.load_pretrained`` returns
  them (a v-network comes wrapped in ``dh.EpsFromV``, so the page always receives ε̂). Inputs
  ``x_t`` (B, C, H, W) float32, ``t`` (B,) int64 in [0, T), and for the conditional one ``y`` (B,)
  int64 in [0, num_classes] (num_classes itself is the null class of guidance); output ``eps_hat``.
* ``classifier.onnx``: the book's MNIST judge, ``x`` (B, 1, 32, 32) in [-1, 1] -> ``logits`` (B, 10).
* ``sampler.json``: the numbers the page's sampler needs, read from each model's own diffusion
  config and the package's own functions, never retyped: T, the float32 tables ᾱ_t, √ᾱ_t and
  √(1 − ᾱ_t) that the package's steps read, the timesteps ``dh.SamplerSpec(...).steps`` visits for
  every step count the page offers, the clipping range of x̂0 and the null class.
* ``card.json``: for each file, the SHA-256 of the source weights and of the ONNX file, its size,
  the opset, and the result of the check below.

Weights in half precision, losslessly: the shipped weights *are* half precision (``dh.save_pretrained``
stores them so), so every weight tensor is stored as float16 in the ONNX file and cast to float32
when the runtime loads it. The float32 network the runtime builds is then bit for bit the one
``dh.load_pretrained`` builds; a tensor that float16 would change (none today) stays float32.
Constant folding is off in the export so that BatchNorm is not folded into the classifier's
convolutions (which would produce new, non-half values).

The check: each exported file is run with onnxruntime on the CPU against PyTorch on the same inputs
(a batch of random x_t at timesteps spread over [0, T), every label and the null class; batch sizes
1 and 8, since the batch axis is dynamic) and must agree to ``--tolerance`` (max |Δ|; default 1e-4,
see ``TOLERANCE``). Taught in: book/try_it (the page), 05_sampling and 07_conditional (what it runs).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

import ddpm_helpers as dh
from ddpm_helpers.checks import validated
from ddpm_helpers.classifier import CLASSIFIER_NAME
from ddpm_helpers.weights import WEIGHTS_DIR

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "_extra" / "try_it" / "models"
OPSET = 18
MAX_STEPS = 50  # the page's steps slider runs from 1 to this
DIFFUSION_MODELS = ("unconditional", "conditional")
# Agreement of onnxruntime with PyTorch, max |Δ| over a batch. Both run the same float32 network
# with the same (half-exact) weights; they differ only in the order of float32 sums. A sum of K
# products rounded in another order differs by about √K·u·Σ|w·x| in a random-walk model (u = 2^-24);
# the U-Net's widest reduction is a 3×3 convolution over 128 channels (K = 1152), so ≈ 34·6e-8 ≈ 2e-6
# relative per layer, and about 30 layers in sequence (normalisation keeps activations O(1)) give
# ≈ 6e-5 in the worst alignment of those per-layer errors, ≈ 1e-5 typically, on outputs of size O(1)
# (ε̂ ~ N(0, 1)). 1e-4 (the bound) covers the worst alignment; a logit of the classifier
# (|logit| up to ~30) is compared relative to its size, max|Δ| ≤ 1e-4 · max(1, max|logit|).
TOLERANCE = 1e-4


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class EpsNetwork(nn.Module):
    """The ONNX view of an ε-network: fixed positional inputs, y only for a conditional one."""

    def __init__(self, model: nn.Module, conditional: bool) -> None:
        super().__init__()
        self.model, self.conditional = model, conditional
        self.num_classes = getattr(model, "num_classes", None)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.model(x_t, t, y if self.conditional else None)


def store_weights_in_half(graph_path: Path) -> dict:
    """Rewrite the float32 initializers of an ONNX file that float16 holds exactly as float16 ones,
    each followed by a Cast back to float32 under its old name; returns what was converted."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(graph_path))
    graph, kept, casts = model.graph, [], []
    half_values = float_values = 0
    for initializer in graph.initializer:
        values = numpy_helper.to_array(initializer)
        if values.dtype == np.float32 and values.size > 1 and np.array_equal(values.astype(np.float16).astype(np.float32), values):
            half = numpy_helper.from_array(values.astype(np.float16), name=f"{initializer.name}__half")
            kept.append(half)
            casts.append(helper.make_node("Cast", [half.name], [initializer.name], to=TensorProto.FLOAT, name=f"{initializer.name}__to_float"))
            half_values += values.size
        else:
            kept.append(initializer)
            float_values += values.size if values.dtype == np.float32 else 0
    del graph.initializer[:]
    graph.initializer.extend(kept)
    nodes = casts + list(graph.node)  # the casts first: the graph stays topologically sorted
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.checker.check_model(model)
    onnx.save(model, str(graph_path))
    return {"float16_values": int(half_values), "float32_values": int(float_values)}


def export(module: nn.Module, inputs: tuple, names: list[str], output: str, path: Path, opset: int) -> None:
    dynamic = {name: {0: "batch"} for name in [*names, output]}
    # The tracer warns about the networks' Python shape checks, which it evaluates once on the example
    # (they pass) and leaves out of the graph; that the graph takes other batch sizes is checked by verify().
    with validated(), torch.no_grad(), warnings.catch_warnings():  # the example inputs are valid: no value checks traced into the graph
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        # the TorchScript exporter, on purpose: torch's newer exporter needs onnxscript, one more
        # dependency, for no gain on this network (the check below measures the result either way)
        warnings.filterwarnings("ignore", "You are using the legacy TorchScript-based ONNX export", DeprecationWarning)
        torch.onnx.export(module, inputs, str(path), opset_version=opset, dynamo=False, input_names=names, output_names=[output],
                          dynamic_axes=dynamic, do_constant_folding=False)


def check_inputs(name: str, model: nn.Module, T: int | None, batch: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Inputs for the check: x at timesteps spread over [0, T) with T−1 and 0 included, every label and the null class."""
    x = torch.randn(batch, 1, 32, 32, generator=generator)
    if T is None:  # the classifier sees images in [-1, 1]
        return {"x": x.clamp(-1, 1)}
    t = torch.linspace(T - 1, 0, batch).round().long()
    inputs = {"x_t": x, "t": t}
    if name == "conditional":
        inputs["y"] = torch.arange(batch) % (model.num_classes + 1)
    return inputs


def verify(path: Path, name: str, module: nn.Module, T: int | None, tolerance: float) -> dict:
    """Run the ONNX file with onnxruntime and PyTorch on the same inputs; returns the worst max |Δ|."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    generator = torch.Generator().manual_seed(0)
    worst, batches = 0.0, (8, 1)
    for batch in batches:
        inputs = check_inputs(name, module, T, batch, generator)
        with validated(), torch.no_grad():
            expected = module(*inputs.values()).numpy()
        got = session.run(None, {key: value.numpy() for key, value in inputs.items()})[0]
        if got.shape != expected.shape:
            raise RuntimeError(f"{path.name}: onnxruntime returned shape {got.shape}, PyTorch {expected.shape}")
        scale = 1.0 if T is not None else max(1.0, float(np.abs(expected).max()))
        difference = float(np.abs(got - expected).max()) / scale
        if not difference <= tolerance:  # also catches NaN
            raise RuntimeError(f"{path.name}: onnxruntime and PyTorch differ by max |Δ| = {difference:.3g} (batch {batch}), above the tolerance {tolerance:g}")
        if T is None and not np.array_equal(got.argmax(1), expected.argmax(1)):
            raise RuntimeError(f"{path.name}: onnxruntime and PyTorch read different digits: {got.argmax(1)} vs {expected.argmax(1)}")
        worst = max(worst, difference)
    return {"max_abs_difference": worst, "relative_to": "1" if T is not None else "max(1, max|logit|)", "tolerance": tolerance,
            "batch_sizes": list(batches), "timesteps": "T-1 ... 0, evenly spread" if T is not None else None,
            "onnxruntime": onnxruntime.__version__, "torch": torch.__version__}


def sampler_numbers(model: nn.Module, diffusion: dh.DiffusionConfig) -> dict:
    """What the page's sampler reads for one diffusion model: its schedule's tables as the package
    stores them (float32, written as exact decimals), and the timesteps the package visits."""
    schedule = dh.make_schedule(diffusion.schedule, diffusion.T)
    space = dh.MNIST_PIXELS
    tables = {name: [float(v) for v in getattr(schedule, name).tolist()] for name in ("alpha_bars", "sqrt_alpha_bars", "sqrt_one_minus_alpha_bars")}
    steps = {str(n): dh.SamplerSpec("ddim", num_steps=n).steps(schedule.T, schedule) for n in range(1, min(MAX_STEPS, schedule.T) + 1)}
    num_classes = getattr(model, "num_classes", None)
    return {"diffusion": diffusion.to_dict(), "T": schedule.T, "spacing": "uniform", "timesteps": steps, **tables,
            "clip_x0": list(space.value_range), "shape": list(space.shape), "num_classes": num_classes,
            "null_class": num_classes}


def export_all(out: Path, *, weights: Path = WEIGHTS_DIR, opset: int = OPSET, tolerance: float = TOLERANCE, log=print) -> dict:
    """Export the models ``unconditional`` and ``conditional`` of the folder ``weights`` and the
    classifier (that folder's ``mnist_classifier``, else the shipped one), store their weights in half,
    verify them, and write sampler.json and card.json into ``out``; returns the card."""
    import onnx

    weights = Path(weights)
    if not weights.is_dir():
        raise ValueError(f"weights must be a folder of models saved by dh.save_pretrained, got {weights} (not a folder)")

    out.mkdir(parents=True, exist_ok=True)
    card = {"format": 1, "opset": opset, "onnx": onnx.__version__, "weights": "float16 initializers cast to float32 at load: lossless, the shipped weights are half precision",
            "models": {}}
    sampler = {"max_steps": MAX_STEPS, "models": {}}
    sources = [(name, name) for name in DIFFUSION_MODELS] + [("classifier", CLASSIFIER_NAME)]
    for name, source in sources:
        start = time.perf_counter()
        if source == CLASSIFIER_NAME:
            folder = weights if (weights / f"{CLASSIFIER_NAME}.pt").is_file() else WEIGHTS_DIR
            module = dh.load_classifier(weights=folder / f"{CLASSIFIER_NAME}.pt", card_path=folder / f"{CLASSIFIER_NAME}.json")
            T, source_card = None, dh.classifier_card(folder / f"{CLASSIFIER_NAME}.json")
            example = check_inputs(name, module, None, 2, torch.Generator().manual_seed(1))
            names, output = ["x"], "logits"
        else:
            folder = weights
            model, diffusion = dh.load_pretrained(source, directory=folder)
            if diffusion is None:
                raise ValueError(f"{source!r} is not a diffusion model (it has no diffusion config)")
            network = model.model.config if isinstance(model, dh.EpsFromV) else model.config
            if (network.image_channels, network.image_size, network.image_size) != dh.MNIST_PIXELS.shape:
                raise ValueError(f"{source!r} draws images of shape {(network.image_channels, network.image_size, network.image_size)}; the page draws {dh.MNIST_PIXELS.shape}")
            module = EpsNetwork(model, conditional=getattr(model, "num_classes", None) is not None).eval()
            if (name == "conditional") != module.conditional:
                raise ValueError(f"the shipped {source!r} model is {'' if module.conditional else 'not '}class-conditional, unlike its name says")
            T, source_card = diffusion.T, dh.pretrained_card(source, folder)
            example = check_inputs(name, model, T, 2, torch.Generator().manual_seed(1))
            names, output = list(example), "eps_hat"
            sampler["models"][name] = sampler_numbers(model, diffusion)
        weights_file = folder / f"{source}.pt"
        if sha256_of(weights_file) != source_card.sha256:  # the loader checked this too; say which bytes were exported
            raise ValueError(f"{weights_file} does not have the SHA-256 its card records")
        with tempfile.TemporaryDirectory(dir=out) as tmp:  # written whole, then moved into place
            path = Path(tmp) / f"{name}.onnx"
            export(module, tuple(example.values()), names, output, path, opset)
            storage = store_weights_in_half(path)
            check = verify(path, name, module, T, tolerance)
            os.replace(path, out / path.name)
        final = out / f"{name}.onnx"
        card["models"][name] = {"file": final.name, "bytes": final.stat().st_size, "sha256": sha256_of(final), "source": source,
                                "source_weights": weights_file.name, "source_sha256": source_card.sha256, "inputs": names, "output": output,
                                "storage": storage, "check": check}
        log(f"{final.name}: {final.stat().st_size / 1e6:.2f} MB, from {weights_file.name} ({source_card.sha256[:12]}...), "
            f"onnxruntime vs PyTorch max |Δ| = {check['max_abs_difference']:.2g} (tolerance {tolerance:g}), {time.perf_counter() - start:.1f} s")
    sampler["classifier"] = {"file": "classifier.onnx", "input": "x", "output": "logits"}
    for filename, payload in (("sampler.json", sampler), ("card.json", card)):
        tmp = out / f".{filename}.tmp"
        tmp.write_text(json.dumps(payload, indent=None if filename == "sampler.json" else 1))
        os.replace(tmp, out / filename)
    return card


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"folder to write into (default: {DEFAULT_OUT.relative_to(ROOT)})")
    parser.add_argument("--weights", type=Path, default=WEIGHTS_DIR, help="folder of the models to export (default: the shipped ones)")
    parser.add_argument("--opset", type=int, default=OPSET, help=f"ONNX opset (default {OPSET})")
    parser.add_argument("--tolerance", type=float, default=TOLERANCE, help=f"largest max |Δ| allowed between onnxruntime and PyTorch (default {TOLERANCE:g})")
    args = parser.parse_args(argv)
    if not 7 <= args.opset <= 23:
        parser.error(f"--opset must lie in [7, 23] (the exporter's range; the page is tested with {OPSET}), got {args.opset}")
    if not (args.tolerance > 0 and np.isfinite(args.tolerance)):
        parser.error(f"--tolerance must be a positive finite number, got {args.tolerance}")
    if not args.weights.is_dir():
        parser.error(f"--weights must be a folder of models saved by dh.save_pretrained, got {args.weights} (no such folder)")
    if args.out.exists() and not args.out.is_dir():
        parser.error(f"--out must be a folder, got the file {args.out}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as error:
        print(f"export_onnx.py needs onnx and onnxruntime (pip install -r requirements.txt): {error}", file=sys.stderr)
        return 1
    torch.set_num_threads(1)
    start = time.perf_counter()
    export_all(args.out, weights=args.weights, opset=args.opset, tolerance=args.tolerance)
    print(f"ONNX export and checks: {time.perf_counter() - start:.1f} s, into {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
