"""Write the small MNIST subset that ships inside ``ddpm_helpers`` (tiny mode and the tests use it).

It keeps torchvision's raw layout (``MNIST/raw/*-idx?-ubyte``) so the real torchvision loader reads it.
The subset is a prefix of the official files: the first ``--train`` training and ``--test`` test images.

    python scripts/make_mnist_subset.py --source ../shared/data/mnist --train 2000 --test 1000
    python scripts/make_mnist_subset.py --smoke    # 10 + 10 images of the shipped subset into a temporary folder
"""

from __future__ import annotations

import argparse
import struct
import tempfile
from pathlib import Path

SUBSET = Path(__file__).resolve().parents[1] / "ddpm_helpers" / "mnist_subset"  # holds MNIST/raw
DEST = SUBSET / "MNIST" / "raw"
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
    parser.add_argument("--source", type=Path, default=None, help="folder holding MNIST/raw in torchvision's layout")
    parser.add_argument("--train", type=int, default=None, help="training images to keep (default 2000; --smoke: 10)")
    parser.add_argument("--test", type=int, default=None, help="test images to keep (default 1000; --smoke: 10)")
    parser.add_argument("--dest", type=Path, default=None, help=f"folder to write MNIST/raw into (default: the package's {SUBSET})")
    parser.add_argument("--smoke", action="store_true", help="copy a prefix of the shipped subset into a temporary folder")
    args = parser.parse_args()
    if args.smoke:
        args.source = args.source or SUBSET
        args.dest = args.dest or Path(tempfile.mkdtemp(prefix="make_mnist_subset-smoke-"))
    if args.source is None:
        parser.error("--source is required (a folder holding MNIST/raw), unless --smoke")
    count = {"train": args.train or (10 if args.smoke else 2000), "test": args.test or (10 if args.smoke else 1000)}
    dest = DEST if args.dest is None else args.dest / "MNIST" / "raw"
    dest.mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        for name in FILES[split]:
            copy_prefix(args.source / "MNIST" / "raw" / name, dest / name, count[split])
    print(f"wrote {count['train']} training and {count['test']} test images to {dest}")


if __name__ == "__main__":
    main()
