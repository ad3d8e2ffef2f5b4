"""Writing and reading weight files: one atomic, checksummed writer for checkpoints and shipped models.

A file is written to ``<path>.tmp``, flushed to disk and renamed over ``<path>``, so an interrupted
write never leaves a half-written file (a failed write removes its temporary file). The writer
returns the file's SHA-256, which the cards of shipped models record and loading verifies.
Reading uses ``torch.load(weights_only=True)``: no code in a file ever runs.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
from torch import nn

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"  # the models shipped with the package
FORMAT_VERSION = 2  # of every file this module writes


def sha256_of(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's bytes, as hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_atomic(payload: dict, path: str | os.PathLike) -> str:
    """Save ``payload`` (with the format version added) to ``path`` atomically; returns its SHA-256."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as handle:
            torch.save({"format_version": FORMAT_VERSION, **payload}, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return sha256_of(path)


def read_weights(path: str | os.PathLike, what: str, *, sha256: str | None = None) -> dict:
    """The dict saved by :func:`write_atomic` at ``path``, after checking that it exists, loads
    safely, has this package's format version and, when ``sha256`` is given, has those bytes.
    ``what`` names the file in messages (e.g. "checkpoint", "pretrained model 'unconditional'")."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what}: no file at {path}")
    if sha256 is not None and sha256_of(path) != sha256:
        raise ValueError(f"{what}: {path.name} does not match the SHA-256 its card records; the file is damaged or was replaced by another")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated zip, pickle garbage, ...: all mean the same to the reader
        raise ValueError(f"{what}: {path.name} is corrupt or not a ddpm_helpers file ({type(error).__name__}: {error})") from error
    if not isinstance(payload, dict) or payload.get("format_version") != FORMAT_VERSION:
        found = payload.get("format_version") if isinstance(payload, dict) else type(payload).__name__
        raise ValueError(f"{what}: {path.name} has format version {found!r}; this package reads version {FORMAT_VERSION}")
    return payload


def half_state_dict(model: nn.Module) -> dict:
    """The model's weights on the CPU, floating tensors in half precision (for shipping)."""
    return {k: v.detach().cpu().half() if v.is_floating_point() else v.detach().cpu() for k, v in model.state_dict().items()}


def load_float_state_dict(model: nn.Module, state: dict, what: str) -> nn.Module:
    """Load ``state`` (half or full precision) into ``model`` in float32; a mismatch names ``what``."""
    try:
        model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    except RuntimeError as error:
        raise ValueError(f"{what} does not fit {type(model).__name__}: {error}") from error
    return model
