import pytest
import torch
import torch.nn.functional as F

import ddpm_helpers as dh


@pytest.mark.slow
def test_bundled_subset_loads_as_padded_digits(cfg):
    train = dh.load_mnist("train", cfg)
    assert train.images.shape == (cfg.data.num_train_images, 1, 32, 32)
    assert train.images.dtype == torch.float32 and train.labels.dtype == torch.int64
    assert float(train.images.min()) == -1.0 and float(train.images.max()) == 1.0
    # the first official MNIST training labels
    assert train.labels[:8].tolist() == [5, 0, 4, 1, 9, 2, 1, 3]
    # padding: a 2-pixel border of background (-1) around the 28×28 digit
    assert bool((train.images[:, :, :2, :] == -1).all()) and bool((train.images[:, :, :, -2:] == -1).all())
    test = dh.load_mnist("test", cfg)
    assert test.images.shape == (1000, 1, 32, 32) and test.labels[:4].tolist() == [7, 2, 1, 0]


def test_validation_images_are_held_out_from_training(cfg):
    train = dh.load_mnist("train", cfg, num_images=10_000)
    val = dh.load_mnist("val", cfg)
    assert val.images.shape[0] == cfg.data.num_val_images
    assert train.images.shape[0] + val.images.shape[0] == 2000  # the shipped training subset
    overlap = (train.images.flatten(1)[:, None, :] == val.images.flatten(1)[None, :, :]).all(-1)
    assert not bool(overlap.any())


def test_ranges_convert_both_ways():
    pixels = torch.tensor([0, 255], dtype=torch.uint8)
    # 2x − 1 and (x + 1)/2 of these values are exact in float32 (powers of two and their sums)
    torch.testing.assert_close(dh.to_model_range(pixels), torch.tensor([-1.0, 1.0]), rtol=0, atol=0)
    torch.testing.assert_close(dh.to_model_range(torch.tensor([0.0, 0.5, 1.0])), torch.tensor([-1.0, 0.0, 1.0]), rtol=0, atol=0)
    torch.testing.assert_close(dh.to_pixel_range(torch.tensor([-1.5, 0.0, 1.0])), torch.tensor([0.0, 0.5, 1.0]), rtol=0, atol=0)


def test_user_root_takes_precedence_and_missing_data_explains_the_fix(cfg, tmp_path, monkeypatch):
    monkeypatch.setenv("DDPM_MNIST_ROOT", str(tmp_path))
    with pytest.raises(RuntimeError, match=r"(?s)could not be loaded from .*DDPM_MNIST_ROOT.*DDPM_MODE=tiny"):
        dh.load_mnist("train", cfg)
    monkeypatch.setenv("DDPM_MNIST_ROOT", str(dh.data.BUNDLED_ROOT))
    assert dh.load_mnist("test", cfg, num_images=5).images.shape[0] == 5


def test_bad_split_and_count(cfg):
    with pytest.raises(ValueError, match="split must be one of"):
        dh.load_mnist("training", cfg)
    with pytest.raises(ValueError, match="num_images must be positive"):
        dh.load_mnist("train", cfg, num_images=0)
    with pytest.raises(ValueError, match="num_val_images"):
        dh.load_mnist("val", cfg.data.replace(num_val_images=5000))


def test_a_data_config_alone_is_enough(cfg):
    from_config = dh.load_mnist("val", cfg)
    from_data = dh.load_mnist("val", cfg.data)
    assert torch.equal(from_config.images, from_data.images) and torch.equal(from_config.labels, from_data.labels)
    with pytest.raises(ValueError, match=r"config must be a dh.Config or dh.DataConfig, got TrainConfig"):
        dh.load_mnist("val", cfg.train)


def test_the_images_fit_the_diffusion_data_space(cfg):
    images = dh.load_mnist("val", cfg).images
    assert tuple(images.shape[1:]) == dh.MNIST_PIXELS.shape
    low, high = dh.MNIST_PIXELS.value_range
    assert float(images.min()) >= low and float(images.max()) <= high


def test_the_idx_reader_gives_exactly_what_torchvision_gave(cfg):
    """The loader reads IDX files itself since Fashion-MNIST joined (one reader, plain or gzip); on
    MNIST it must give torchvision's MNIST bit for bit, in the same order, as it did before."""
    from torchvision.datasets import MNIST
    for train in (True, False):
        reference = MNIST(str(dh.data.BUNDLED_ROOT), train=train)
        expected = F.pad(dh.to_model_range(reference.data), (2, 2, 2, 2), value=-1.0).unsqueeze(1)
        if train:
            splits = [dh.load_mnist("train", cfg, num_images=10_000), dh.load_mnist("val", cfg)]
            images, labels = torch.cat([s.images for s in splits]), torch.cat([s.labels for s in splits])
        else:
            images, labels = dh.load_mnist("test", cfg)
        assert torch.equal(images, expected) and torch.equal(labels, reference.targets)
