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


def content_digest(value: object) -> str:
    """A SHA-256 of a payload's contents: every tensor's dtype, shape and bytes, and every other
    value's repr, in order. It is stored in the file and recomputed when it is read, so damage
    inside a tensor, which the file format itself does not notice, is caught."""
    digest = hashlib.sha256()

    def feed(item: object) -> None:
        if isinstance(item, torch.Tensor):
            data = item.detach().cpu().contiguous()
            digest.update(f"tensor {data.dtype} {tuple(data.shape)};".encode())
            digest.update(data.reshape(-1).view(torch.uint8).numpy().tobytes() if data.numel() else b"")
        elif isinstance(item, dict):
            digest.update(f"dict {len(item)};".encode())
            for key in item:
                feed(key)
                feed(item[key])
        elif isinstance(item, (list, tuple)):
            digest.update(f"{type(item).__name__} {len(item)};".encode())
            for element in item:
                feed(element)
        else:
            digest.update(f"{type(item).__name__} {item!r};".encode())

    feed(value)
    return digest.hexdigest()


def write_atomic(payload: dict, path: str | os.PathLike) -> str:
    """Save ``payload`` (with the format version and its :func:`content_digest` added) to ``path``
    atomically; returns the file's SHA-256."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as handle:
            torch.save({"format_version": FORMAT_VERSION, **payload, "content_sha256": content_digest(payload)}, handle)
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
    stored = payload.pop("content_sha256", None)
    content = {k: v for k, v in payload.items() if k != "format_version"}
    if stored is None and sha256 is None:
        raise ValueError(f"{what}: {path.name} carries no content checksum, so damage inside it could not be detected; it was not written by this version of ddpm_helpers")
    if stored is not None and stored != content_digest(content):
        raise ValueError(f"{what}: {path.name} is damaged: its contents do not match the checksum written with them")
    return payload


HALF_MAX = float(torch.finfo(torch.float16).max)


def half_state_dict(model: nn.Module) -> dict:
    """The model's weights on the CPU, floating tensors in half precision (for shipping). A weight
    that half precision cannot hold (non-finite, or beyond ±65,504) is refused by name."""
    state = {}
    for key, value in model.state_dict().items():
        value = value.detach().cpu()
        if value.is_floating_point():
            if value.numel() and not bool(torch.isfinite(value).all()):
                raise ValueError(f"weight {key!r} holds NaN or infinite values; refusing to save a broken model")
            if value.numel() and float(value.abs().max()) > HALF_MAX:
                raise ValueError(f"weight {key!r} reaches {float(value.abs().max()):.3g}, beyond half precision's range (±{HALF_MAX:g}); it would be saved as inf")
            value = value.half()
        state[key] = value
    return state


def load_float_state_dict(model: nn.Module, state: dict, what: str) -> nn.Module:
    """Load ``state`` (half or full precision) into ``model`` in float32; a mismatch names ``what``."""
    try:
        model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    except RuntimeError as error:
        raise ValueError(f"{what} does not fit {type(model).__name__}: {error}") from error
    return model
