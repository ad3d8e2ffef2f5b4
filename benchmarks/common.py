"""Shared plumbing of the benchmark scripts: arguments, device, timing, and JSON results.

Every benchmark takes ``--size`` (``tiny``: seconds, the tiny config and the MNIST subset shipped with
the package, results into a temporary folder: the smoke test of ``tests/test_scripts.py``) and
``--set component.field=value`` overrides, read by ``dh.Config.with_overrides``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import ddpm_helpers as dh  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def parser(description: str, sizes: dict[str, dict]) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: the best available)")
    p.add_argument("--size", choices=sorted(sizes), default="default", help="how much to run: " + "; ".join(f"{k}: {v}" for k, v in sizes.items()))
    p.add_argument("--results", type=Path, default=None, help=f"folder for the JSON results (default: {RESULTS}; a temporary folder for --size tiny)")
    p.add_argument("--set", nargs="*", default=[], metavar="COMPONENT.FIELD=VALUE", help="config overrides, e.g. train.lr=3e-3 diffusion.schedule=cosine")
    return p


def configure(p: argparse.ArgumentParser, args: argparse.Namespace, smoke: bool) -> "dh.Config":
    """The book's full config (the tiny one for a smoke run) with ``--set`` applied; a smoke run's results
    go to a temporary folder, never into benchmarks/results."""
    if args.results is None:
        args.results = Path(tempfile.mkdtemp(prefix="ddpm-benchmark-")) if smoke else RESULTS
    elif smoke and args.results.resolve() == RESULTS.resolve():
        p.error(f"a smoke run does not write into {RESULTS}: choose another --results folder")
    try:
        return (dh.TINY if smoke else dh.FULL).with_overrides(args.set)
    except ValueError as error:
        p.error(f"--set: {error}")


def setup(description: str, sizes: dict[str, dict], extra: Callable[[argparse.ArgumentParser], object] | None = None) -> tuple[argparse.Namespace, dict, torch.device, "dh.Config"]:
    """Parse the arguments (``extra`` adds a script's own); return them, the chosen size's settings, the device
    and the book's full config (tiny for ``--size tiny``) with the ``--set`` overrides."""
    p = parser(description, sizes)
    if extra is not None:
        extra(p)
    args = p.parse_args()
    cfg = configure(p, args, smoke=args.size == "tiny")
    return args, sizes[args.size], dh.pick_device(args.device), cfg


def judged(model: torch.nn.Module, cfg: "dh.Config", schedule: "dh.NoiseSchedule") -> torch.nn.Module:
    """The network as the samplers read it: an eps-network, so a v-network (``diffusion.prediction=v``) goes through dh.EpsFromV."""
    return model if cfg.diffusion.prediction == "eps" else dh.EpsFromV(model, schedule)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device) -> float:
    """Wall-clock seconds of ``fn()``, with the device synchronised before and after."""
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def median(values: list[float]) -> float:
    return statistics.median(values)


def peak_memory_mb(device: torch.device) -> float:
    """Peak GPU memory allocated by torch on CUDA; peak resident memory of the process on the CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def environment(device: torch.device) -> dict:
    return {
        "device": dh.describe_device(device),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu_threads": torch.get_num_threads(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def save(name: str, device: torch.device, args: argparse.Namespace, results: dict, summary: str) -> Path:
    """Write ``<args.results>/<name>-<device type>.json`` (default ``benchmarks/results/``) and print the one-line summary."""
    args.results.mkdir(parents=True, exist_ok=True)
    path = args.results / f"{name}-{device.type}.json"
    payload = {"benchmark": name, "size": args.size, "environment": environment(device), "summary": summary, "results": results}
    path.write_text(json.dumps(payload, indent=2) + "\n")
    print(summary)
    shown = path.resolve().relative_to(RESULTS.parents[1]) if path.resolve().is_relative_to(RESULTS.parents[1]) else path
    print(f"results written to {shown}")
    return path
