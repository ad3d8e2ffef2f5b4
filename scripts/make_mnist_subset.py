"""Write the small MNIST subset that ships inside ``ddpm_helpers`` (tiny mode and the tests use it).

It keeps torchvision's raw layout (``MNIST/raw/*-idx?-ubyte``) so the real torchvision loader reads it.
The subset is a prefix of the official files: the first ``--train`` training and ``--test`` test images.

    python scripts/make_mnist_subset.py --source ../shared/data/mnist --train 2000 --test 1000
"""

from __future__ import annotations

import argparse
import struct
from pathlib import Path

DEST = Path(__file__).resolve().parents[1] / "ddpm_helpers" / "mnist_subset" / "MNIST" / "raw"
FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"), "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def copy_prefix(src: Path, dst: Path, count: int) -> None:
    """Copy the first ``count`` items of an IDX file, rewriting the item count in its header."""
    data = src.read_bytes()
    magic, total = struct.unpack(">II", data[:8])
    ndim = magic & 0xFF
    dims = struct.unpack(">" + "I" * (ndim - 1), data[8 : 4 + 4 * ndim])
    if count > total:
        raise ValueError(f"{src} holds {total} items, asked for {count}")
    item_size = 1
    for d in dims:
        item_size *= d
    header_size = 4 + 4 * ndim
    header = struct.pack(">II", magic, count) + data[8:header_size]
    dst.write_bytes(header + data[header_size : header_size + count * item_size])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, required=True, help="folder holding MNIST/raw in torchvision's layout")
    parser.add_argument("--train", type=int, default=2000)
    parser.add_argument("--test", type=int, default=1000)
    args = parser.parse_args()
    DEST.mkdir(parents=True, exist_ok=True)
    for split, count in (("train", args.train), ("test", args.test)):
        for name in FILES[split]:
            copy_prefix(args.source / "MNIST" / "raw" / name, DEST / name, count)
    print(f"wrote {args.train} training and {args.test} test images to {DEST}")


if __name__ == "__main__":
    main()
