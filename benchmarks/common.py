"""Shared plumbing of the benchmark scripts: arguments, device, timing, and JSON results."""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import resource
import statistics
import sys
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
    p.add_argument("--results", type=Path, default=RESULTS, help="folder for the JSON results (default: %(default)s)")
    return p


def setup(description: str, sizes: dict[str, dict], extra: Callable[[argparse.ArgumentParser], object] | None = None) -> tuple[argparse.Namespace, dict, torch.device, "dh.Config"]:
    """Parse the arguments (``extra`` adds a script's own); return them, the chosen size's settings, the device and the book's full config."""
    p = parser(description, sizes)
    if extra is not None:
        extra(p)
    args = p.parse_args()
    return args, sizes[args.size], dh.pick_device(args.device), dh.FULL


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
