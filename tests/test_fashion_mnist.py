"""Fashion-MNIST beside MNIST (issue 29, part 1): one data-set field, one IDX reader, the folder found
without configuration, the bundled subset made from the real files, and the judge chosen per data set.

Every test reads the subset shipped in the package except one, which compares it with Debian's full
files (``apt-get install dataset-fashion-mnist``) and is skipped where they are not installed.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import ddpm_helpers as dh
from ddpm_helpers.data import DATASETS, FILE_NAMES

ROOT = Path(__file__).resolve().parents[1]
FASHION = DATASETS["fashion-mnist"]
SUBSET = FASHION.bundled_root
RAW = SUBSET / FASHION.folder / "raw"
DEBIAN = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture
def fashion(cfg) -> dh.Config:
    return cfg.replace(data=cfg.data.replace(dataset="fashion-mnist"))


@pytest.fixture(autouse=True)
def no_user_roots(monkeypatch):
    """The reader's own copies and data-set choice must not leak into these tests."""
    for name in ("DDPM_MNIST_ROOT", "DDPM_FASHION_MNIST_ROOT", "DDPM_DATASET"):
        monkeypatch.delenv(name, raising=False)


def idx_bytes(values: torch.Tensor) -> bytes:
    """An IDX file of unsigned bytes, written by hand from the format's definition."""
    return bytes([0, 0, 0x08, values.ndim]) + struct.pack(f">{values.ndim}I", *values.shape) + values.to(torch.uint8).numpy().tobytes()


# the data-set field and the one switch ----------------------------------------------------------

def test_the_dataset_is_one_value_chosen_like_the_mode(monkeypatch):
    assert dh.TINY.data.dataset == dh.FULL.data.dataset == "mnist"
    assert dh.load_config("tiny") is dh.TINY  # MNIST: the preset itself, unchanged
    monkeypatch.setenv("DDPM_DATASET", "fashion-mnist")
    cfg = dh.load_config("tiny")
    assert cfg.data == dh.TINY.data.replace(dataset="fashion-mnist") and cfg.replace(data=dh.TINY.data) == dh.TINY
    assert "data=fashion-mnist/bundled" in cfg.summary()  # what every chapter's first cell prints
    assert dh.load_config("full", dataset="mnist") is dh.FULL  # the argument wins over the variable
    monkeypatch.setenv("DDPM_DATASET", "cifar10")
    with pytest.raises(ValueError, match=r"dataset must be one of \['fashion-mnist', 'mnist'\] \(from the argument or \$DDPM_DATASET\), got 'cifar10'"):
        dh.load_config("tiny")
    assert dh.TINY.with_overrides(["data.dataset=fashion-mnist"]).data.dataset == "fashion-mnist"  # scripts' --set


def test_the_new_field_at_mnist_leaves_every_stored_hash_alone():
    """('data', 'dataset') is registered in provenance.ADDED_FIELDS: at "mnist" the hash is the one
    computed before the field existed, so stored chapters stay current; Fashion-MNIST is a change."""
    assert dh.provenance.ADDED_FIELDS[("data", "dataset")] == "mnist"
    data = dh.FULL.to_dict()["data"]
    data.pop("dataset")
    before = hashlib.sha256(json.dumps({"data": data}, sort_keys=True).encode()).hexdigest()[:16]
    assert dh.provenance.config_hash(dh.FULL, ("data",)) == before
    fashion = dh.FULL.replace(data=dh.FULL.data.replace(dataset="fashion-mnist"))
    assert dh.provenance.config_hash(fashion, ("data",)) != before


def test_class_names_for_figures(cfg, fashion):
    assert dh.class_names(cfg) == tuple("0123456789") and dh.class_names(cfg.data) == dh.class_names("mnist")
    names = dh.class_names(fashion)
    assert len(names) == 10 and names[0] == "T-shirt/top" and names[9] == "Ankle boot"
    from torchvision.datasets import FashionMNIST
    assert list(names) == FashionMNIST.classes  # the names torchvision gives the same labels
    with pytest.raises(ValueError, match="dataset must be one of .*got 'kmnist'"):
        dh.class_names("kmnist")


# the bundled subset ---------------------------------------------------------------------------

def test_the_bundled_subset_is_fashion_mnist_at_32x32(fashion):
    train = dh.load_mnist("train", fashion)
    assert train.images.shape == (fashion.data.num_train_images, 1, 32, 32) and train.images.dtype == torch.float32
    assert float(train.images.min()) == -1.0 and float(train.images.max()) == 1.0
    assert train.labels[:8].tolist() == [9, 0, 0, 3, 0, 2, 7, 2]  # the first official training labels (ankle boot, T-shirt, ...)
    assert bool((train.images[:, :, :2, :] == -1).all()) and bool((train.images[:, :, :, -2:] == -1).all())  # padded with background
    test = dh.load_mnist("test", fashion)
    assert test.images.shape == (1000, 1, 32, 32) and test.labels[:4].tolist() == [9, 2, 1, 1]
    val = dh.load_mnist("val", fashion)
    assert val.images.shape[0] == fashion.data.num_val_images
    every = dh.load_mnist("train", fashion, num_images=10_000)
    assert every.images.shape[0] + val.images.shape[0] == 2000  # val is held out from the end of the shipped training images
    assert torch.bincount(every.labels, minlength=10).min() >= 150  # every class present (about 200 each)
    assert not torch.equal(test.images[:8], dh.load_mnist("test", dh.TINY).images[:8])  # not MNIST


def test_the_bundled_subset_is_what_its_record_says():
    record = json.loads((SUBSET / "SOURCE.json").read_text())
    assert record["dataset"] == "fashion-mnist" and (record["num_train_images"], record["num_test_images"]) == (2000, 1000)
    names = {f"{name}.gz" for names in FILE_NAMES.values() for name in names}
    assert set(record["files"]) == names == {path.name for path in RAW.iterdir()} and set(record["source"]) == names
    for name, digest in record["files"].items():
        assert hashlib.sha256((RAW / name).read_bytes()).hexdigest() == digest, name
    size = sum(path.stat().st_size for path in RAW.iterdir())
    assert size < 1_500_000, f"the subset ships in the wheel: {size:,} bytes"
    assert f"{size:,} bytes" in (SUBSET / "README.md").read_text()


def test_the_subset_ships_in_the_wheel():
    """pyproject's package-data names every file of the subset (and MNIST's)."""
    import fnmatch
    import tomllib
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["ddpm_helpers"]
    package = ROOT / "ddpm_helpers"
    for folder in (SUBSET, dh.data.BUNDLED_ROOT):
        for path in (p for p in folder.rglob("*") if p.is_file()):
            name = str(path.relative_to(package))
            assert any(fnmatch.fnmatch(name, pattern) for pattern in patterns), f"{name} is not in pyproject's package-data"


def test_the_subset_script_rebuilds_the_same_bytes(tmp_path):
    """Its gzip has no timestamp, so the shipped subset as a source (a prefix of a prefix) gives the same files."""
    run_script("scripts/make_mnist_subset.py", "--dataset", "fashion-mnist", "--source", str(SUBSET), "--dest", str(tmp_path))
    for path in RAW.iterdir():
        assert (tmp_path / FASHION.folder / "raw" / path.name).read_bytes() == path.read_bytes(), path.name
    run_script("scripts/make_mnist_subset.py", "--dataset", "fashion-mnist", "--smoke", "--dest", str(tmp_path / "smoke"))
    smoke = dh.load_mnist("test", dh.TINY.data.replace(dataset="fashion-mnist"), root=tmp_path / "smoke")
    assert torch.equal(smoke.images, dh.load_mnist("test", dh.TINY.data.replace(dataset="fashion-mnist"), num_images=10).images)


@pytest.mark.skipif(not DEBIAN.is_dir(), reason=f"Debian's full Fashion-MNIST is not installed ({DEBIAN}; apt-get install dataset-fashion-mnist)")
def test_the_debian_files_are_found_without_configuration_and_the_subset_is_their_prefix(fashion):
    record = json.loads((SUBSET / "SOURCE.json").read_text())
    for name, digest in record["source"].items():
        assert hashlib.sha256((DEBIAN / name).read_bytes()).hexdigest() == digest, f"{DEBIAN / name} is not the file the subset was made from"
    full = dh.FULL.data.replace(dataset="fashion-mnist")
    assert dh.data.resolve_root(full) == (DEBIAN, False)  # found, nothing downloaded
    test = dh.load_mnist("test", full)
    assert test.images.shape == (10_000, 1, 32, 32) and torch.bincount(test.labels).tolist() == [1000] * 10
    assert torch.equal(test.images[:1000], dh.load_mnist("test", fashion).images)
    train = dh.load_mnist("train", full, num_images=1000)
    assert torch.equal(train.images, dh.load_mnist("train", fashion, num_images=1000).images)
    assert dh.load_mnist("val", full).images.shape[0] == 1000 and dh.load_mnist("train", full).images.shape[0] == 59_000


# where the files are found ----------------------------------------------------------------------

def flat_copy(folder: Path) -> Path:
    """The subset's four .gz files directly in ``folder``, as Debian installs the full set."""
    folder.mkdir(parents=True, exist_ok=True)
    for path in RAW.iterdir():
        shutil.copy(path, folder / path.name)
    return folder


def test_the_order_user_folder_bundled_system_download(fashion, tmp_path, monkeypatch):
    system = flat_copy(tmp_path / "system")
    monkeypatch.setitem(DATASETS, "fashion-mnist", FASHION._replace(system_roots=(tmp_path / "absent", system)))
    full = dh.FULL.data.replace(dataset="fashion-mnist")
    assert dh.data.resolve_root(full) == (system, False)  # the first installed copy
    assert dh.data.resolve_root(fashion) == (SUBSET, False)  # tiny mode reads the subset even so
    assert torch.equal(dh.load_mnist("test", full).images, dh.load_mnist("test", fashion).images)
    monkeypatch.setenv("DDPM_MNIST_ROOT", str(tmp_path / "mnist"))  # MNIST's variable is not Fashion-MNIST's
    assert dh.data.resolve_root(full) == (system, False)
    monkeypatch.setenv("DDPM_FASHION_MNIST_ROOT", str(tmp_path / "mine"))
    assert dh.data.resolve_root(full) == (tmp_path / "mine", False) and dh.data.resolve_root(fashion) == (tmp_path / "mine", False)
    assert dh.data.resolve_root(dh.TINY.data) == (tmp_path / "mnist", False)
    monkeypatch.delenv("DDPM_FASHION_MNIST_ROOT")
    monkeypatch.setitem(DATASETS, "fashion-mnist", FASHION._replace(system_roots=(tmp_path / "absent",)))
    assert dh.data.resolve_root(full) == (dh.data.CACHE_ROOT, True)  # nothing installed: torchvision may download


def test_a_download_asks_torchvision_for_fashion_mnist_into_the_cache(tmp_path, monkeypatch):
    """Colab's path, tested by its arguments: torchvision's FashionMNIST class, the cache folder,
    download=True, and the files it leaves in FashionMNIST/raw are then read like any other."""
    import torchvision.datasets

    calls = []

    class FakeFashionMNIST:
        def __init__(self, root, train, download):
            calls.append((root, train, download))
            raw = Path(root) / "FashionMNIST" / "raw"
            raw.mkdir(parents=True, exist_ok=True)
            for name in FILE_NAMES["train" if train else "test"]:
                (raw / name).write_bytes(gzip.decompress((RAW / f"{name}.gz").read_bytes()))  # unpacked, as torchvision leaves them

    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", FakeFashionMNIST)
    monkeypatch.setattr(dh.data, "CACHE_ROOT", tmp_path / "cache")
    monkeypatch.setitem(DATASETS, "fashion-mnist", FASHION._replace(system_roots=()))
    full = dh.FULL.data.replace(dataset="fashion-mnist")
    test = dh.load_mnist("test", full)
    assert calls == [(str(tmp_path / "cache"), False, True)]
    assert torch.equal(test.images, dh.load_mnist("test", dh.TINY.data.replace(dataset="fashion-mnist")).images)
    dh.load_mnist("test", full)
    assert len(calls) == 1  # in the cache now: not downloaded again


def test_missing_fashion_files_say_how_to_get_them(fashion, tmp_path, monkeypatch):
    monkeypatch.setenv("DDPM_FASHION_MNIST_ROOT", str(tmp_path))
    with pytest.raises(RuntimeError, match=r"(?s)Fashion-MNIST could not be loaded from .*t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte .*"
                                           r"DDPM_FASHION_MNIST_ROOT.*FashionMNIST/raw/.*apt-get install dataset-fashion-mnist.*DDPM_MODE=tiny"):
        dh.load_mnist("test", fashion)
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes((RAW / "t10k-images-idx3-ubyte.gz").read_bytes())
    with pytest.raises(RuntimeError, match="are not both in"):  # one of the two is not enough
        dh.load_mnist("test", fashion)


@pytest.mark.parametrize("damage", ["gzip cut short", "not gzip, not idx", "labels of another split", "label 10"])
def test_damaged_fashion_files_name_the_files(fashion, tmp_path, damage):
    raw = flat_copy(tmp_path / "copy")
    images, labels = raw / "t10k-images-idx3-ubyte.gz", raw / "t10k-labels-idx1-ubyte.gz"
    if damage == "gzip cut short":
        images.write_bytes(images.read_bytes()[:5000])
    elif damage == "not gzip, not idx":
        images.write_bytes(b"<html>404 Not Found</html>")  # what a failed download can leave
    elif damage == "labels of another split":
        labels.write_bytes((raw / "train-labels-idx1-ubyte.gz").read_bytes())
    else:
        data = bytearray(gzip.decompress(labels.read_bytes()))
        data[8] = 10
        labels.write_bytes(gzip.compress(bytes(data)))
    with pytest.raises(ValueError, match=r"Fashion-MNIST files .*copy/\{t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz\}"):
        dh.load_mnist("test", fashion, root=raw)


# the one IDX reader ------------------------------------------------------------------------------

def test_read_idx_reads_the_format_plain_and_compressed(tmp_path):
    values = torch.arange(2 * 3 * 4, dtype=torch.uint8).reshape(2, 3, 4)
    (tmp_path / "a").write_bytes(idx_bytes(values))
    (tmp_path / "a.gz").write_bytes(gzip.compress(idx_bytes(values)))
    assert torch.equal(dh.data.read_idx(tmp_path / "a"), values) and torch.equal(dh.data.read_idx(tmp_path / "a.gz"), values)
    (tmp_path / "empty-set").write_bytes(idx_bytes(torch.zeros(0, dtype=torch.uint8)))
    assert dh.data.read_idx(tmp_path / "empty-set").shape == (0,)
    from torchvision.datasets.mnist import read_sn3_pascalvincent_tensor
    mnist = dh.data.BUNDLED_ROOT / "MNIST" / "raw" / "t10k-images-idx3-ubyte"
    assert torch.equal(dh.data.read_idx(mnist), read_sn3_pascalvincent_tensor(str(mnist)))  # what torchvision reads


@pytest.mark.parametrize("content,message", [
    (b"", "not an IDX file.*got an empty file"),
    (b"\x08\x03\x00\x00", "not an IDX file.*two zero bytes"),
    (bytes([0, 0, 0x0D, 1, 0, 0, 0, 1]) + b"\0\0\0\0", r"IDX type 0x0d with 1 dimensions; .*unsigned bytes \(type 0x08\)"),
    (bytes([0, 0, 8, 3, 0, 0, 0, 1]), r"the header is cut short \(8 bytes, 16 needed"),
    (bytes([0, 0, 8, 1, 0, 0, 0, 5, 1, 2]), r"the header promises 5 = 5 bytes of values, the file holds 2"),
    (b"\x1f\x8b\x08\x00garbage", "damaged gzip data"),
], ids=["empty", "no zero bytes", "not bytes", "header cut short", "values cut short", "bad gzip"])
def test_read_idx_names_the_file_and_what_is_wrong(tmp_path, content, message):
    path = tmp_path / "bad-idx1-ubyte"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=rf"^{re.escape(str(path))}: {message}"):
        dh.data.read_idx(path)


# the judge of each data set ---------------------------------------------------------------------

def test_the_judge_is_chosen_per_dataset(tmp_path, monkeypatch):
    assert dh.classifier.classifier_name("mnist") == "mnist_classifier" and dh.classifier.classifier_name("fashion-mnist") == "fashion_mnist_classifier"
    with pytest.raises(ValueError, match="dataset must be one of .*got 'digits'"):
        dh.load_classifier(dataset="digits")
    card = dh.classifier_card(dataset="fashion-mnist")  # shipped: measured on all 10,000 official test images
    assert card.name == "fashion_mnist_classifier" and card.quality["test_accuracy"].num_samples == 10_000
    assert "--dataset fashion-mnist" in card.provenance.trained_by and "Fashion-MNIST" in card.notes
    with monkeypatch.context() as patch:
        patch.setattr(dh.classifier, "WEIGHTS_DIR", tmp_path)  # where it is missing, the error says how to make it
        with pytest.raises(FileNotFoundError, match=r"no classifier weights at .*fashion_mnist_classifier.pt: the Fashion-MNIST classifier is not shipped yet; "
                                                    r"make it with scripts/train_classifier.py --dataset fashion-mnist"):
            dh.load_classifier(dataset="fashion-mnist")
    with pytest.raises(ValueError, match="names the model 'mnist_classifier', not 'fashion_mnist_classifier'"):  # MNIST's judge is not Fashion-MNIST's
        dh.load_classifier(weights=dh.classifier.CLASSIFIER_WEIGHTS, card_path=dh.classifier.CLASSIFIER_CARD, dataset="fashion-mnist")


def test_the_shipped_judge_recognises_the_bundled_test_garments(fashion):
    """The bundled test garments are 1,000 of the official test images on which the card's accuracy p was
    measured, so the judge's accuracy on them is p up to sampling: its standard deviation is
    sqrt(p(1 - p) / 1000), about 0.009 at p = 0.91. Four of them is the tolerance (a 1-in-30,000 false alarm)."""
    judge = dh.load_classifier(dataset="fashion-mnist")
    p = dh.classifier_card(dataset="fashion-mnist").quality["test_accuracy"].value
    test = dh.load_mnist("test", fashion)
    accuracy = dh.metrics.class_accuracy(dh.metrics.classify(judge, test.images).logits, test.labels)
    assert abs(accuracy - p) <= 4 * (p * (1 - p) / len(test.labels)) ** 0.5, (accuracy, p, len(test.labels))


def run_script(script: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, str(ROOT / script), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{script} {' '.join(args)} exited with {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.mark.slow
def test_the_fashion_judge_trains_by_the_script(tmp_path):
    """The route the lead runs in full (--smoke: one epoch on the subset, about 10 s): its card names it
    and states the test accuracy on the bundled test images, measured on the shipped float16 weights."""
    run_script("scripts/train_classifier.py", "--smoke", "--dataset", "fashion-mnist", "--out", str(tmp_path))
    card = dh.classifier_card(tmp_path / "fashion_mnist_classifier.json", dataset="fashion-mnist")
    assert card.name == "fashion_mnist_classifier" and card.kind == "mnist-classifier"
    assert card.provenance.trained_by == "scripts/train_classifier.py --smoke --dataset fashion-mnist"
    assert card.quality["test_accuracy"].num_samples == 1000 and card.provenance.num_train_images == 512 + 64
    assert card.quality["fid_floor"].num_samples == 576 and card.quality["fid_floor"].value >= 0  # n: every training image; a one-epoch judge sees little (0.0 here)
    assert "Fashion-MNIST" in card.notes
    dh.load_classifier(weights=tmp_path / "fashion_mnist_classifier.pt", card_path=tmp_path / "fashion_mnist_classifier.json", dataset="fashion-mnist")
