"""Write the small subset of MNIST or Fashion-MNIST that ships inside ``ddpm_helpers`` (tiny mode and the tests read it).

It keeps torchvision's raw layout (``MNIST/raw/``, ``FashionMNIST/raw/``) and is a prefix of the
official files: the first ``--train`` training and ``--test`` test images. MNIST's subset is plain IDX
files, as it has shipped from the start; Fashion-MNIST's is gzip-compressed like the published files
(written with a zero timestamp, so the same source gives the same bytes). Beside it, ``SOURCE.json``
records the SHA-256 of each source file read and of each file written.

    python scripts/make_mnist_subset.py --source ../shared/data/mnist --train 2000 --test 1000
    python scripts/make_mnist_subset.py --dataset fashion-mnist          # from Debian's dataset-fashion-mnist
    python scripts/make_mnist_subset.py --smoke    # 10 + 10 images of the shipped subset into a temporary folder

``--source`` is a folder holding the four IDX files (plain or .gz), in torchvision's layout or
directly; for Fashion-MNIST it defaults to the system copy that ``dh.load_mnist`` finds
(``/usr/share/datasets/fashion-mnist``).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import struct
import tempfile
from pathlib import Path

from ddpm_helpers.data import DATASETS, FILE_NAMES, _find_files, read_idx

COMPRESS = {"mnist": False, "fashion-mnist": True}  # MNIST's subset stays as it has always shipped


def copy_prefix(src: Path, dst: Path, count: int) -> None:
    """Copy the first ``count`` items of the IDX file ``src`` (plain or .gz) to ``dst``, rewriting the
    item count in its header; ``dst`` is gzip-compressed when its name ends in ``.gz``."""
    read_idx(src)  # a damaged source stops here, naming the file
    data = gzip.decompress(src.read_bytes()) if src.name.endswith(".gz") else src.read_bytes()
    magic, total = struct.unpack(">II", data[:8])
    ndim = magic & 0xFF
    dims = struct.unpack(">" + "I" * (ndim - 1), data[8 : 4 + 4 * ndim])
    if count > total:
        raise ValueError(f"{src} holds {total} items, asked for {count}")
    item_size = 1
    for d in dims:
        item_size *= d
    header_size = 4 + 4 * ndim
    out = struct.pack(">II", magic, count) + data[8:header_size] + data[header_size : header_size + count * item_size]
    dst.write_bytes(gzip.compress(out, compresslevel=9, mtime=0) if dst.name.endswith(".gz") else out)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=tuple(DATASETS), default="mnist")
    parser.add_argument("--source", type=Path, default=None, help="folder holding the four IDX files (default for fashion-mnist: the system copy)")
    parser.add_argument("--train", type=int, default=None, help="training images to keep (default 2000; --smoke: 10)")
    parser.add_argument("--test", type=int, default=None, help="test images to keep (default 1000; --smoke: 10)")
    parser.add_argument("--dest", type=Path, default=None, help="folder to write <Folder>/raw into (default: the package's subset folder of the data set)")
    parser.add_argument("--smoke", action="store_true", help="copy a prefix of the shipped subset into a temporary folder")
    args = parser.parse_args()
    info = DATASETS[args.dataset]
    if args.smoke:
        args.source = args.source or info.bundled_root
        args.dest = args.dest or Path(tempfile.mkdtemp(prefix="make_mnist_subset-smoke-"))
    if args.source is None:
        args.source = next((root for root in info.system_roots if all(_find_files(root, info, names) for names in FILE_NAMES.values())), None)
    if args.source is None:
        parser.error(f"--source is required (a folder holding the four {info.title} IDX files), unless --smoke"
                     + (f" or {info.title} is installed ({info.system_hint})" if info.system_roots else ""))
    count = {"train": args.train or (10 if args.smoke else 2000), "test": args.test or (10 if args.smoke else 1000)}
    for split, value in count.items():
        if value < 1:
            parser.error(f"--{split} must be a positive number of images, got {value}")
    subset = info.bundled_root if args.dest is None else args.dest
    dest = subset / info.folder / "raw"
    dest.mkdir(parents=True, exist_ok=True)
    record = {"dataset": args.dataset, "num_train_images": count["train"], "num_test_images": count["test"], "source": {}, "files": {}}
    for split in ("train", "test"):
        sources = _find_files(args.source, info, FILE_NAMES[split])
        if sources is None:
            raise SystemExit(f"--source {args.source}: {' and '.join(FILE_NAMES[split])} (plain or .gz) are not both in {args.source / info.folder / 'raw'} or in {args.source}")
        for name, src in zip(FILE_NAMES[split], sources):
            target = dest / (f"{name}.gz" if COMPRESS[args.dataset] else name)
            copy_prefix(src, target, count[split])
            record["source"][src.name] = sha256(src)
            record["files"][target.name] = sha256(target)
    (subset / "SOURCE.json").write_text(json.dumps(record, indent=2) + "\n")
    size = sum(p.stat().st_size for p in dest.iterdir())
    print(f"wrote {count['train']} training and {count['test']} test images of {info.title} to {dest} ({size:,} bytes) and {subset / 'SOURCE.json'}")


if __name__ == "__main__":
    main()
