import hashlib
import json
import math
import warnings

import numpy as np
import pytest
import torch

import ddpm_helpers as dh
from ddpm_helpers import metrics


def gaussian(n, mean, cov, seed):
    g = torch.Generator().manual_seed(seed)
    chol = torch.linalg.cholesky(torch.as_tensor(cov, dtype=torch.float64))
    return torch.as_tensor(mean, dtype=torch.float64) + torch.randn(n, len(mean), generator=g, dtype=torch.float64) @ chol.T


def test_fid_of_two_gaussians_matches_the_closed_form():
    """Diagonal covariances: FID = ‖μa − μb‖² + Σ_i (σa_i − σb_i)²."""
    mean_a, mean_b = [0.0, 1.0, -1.0], [0.5, 1.0, 0.0]
    var_a, var_b = np.array([1.0, 4.0, 0.25]), np.array([2.0, 1.0, 0.25])
    a = gaussian(200_000, mean_a, np.diag(var_a), 0)
    b = gaussian(200_000, mean_b, np.diag(var_b), 1)
    expected = 0.25 + 1.0 + ((np.sqrt(var_a) - np.sqrt(var_b)) ** 2).sum()
    # Monte Carlo: the estimate's standard deviation is 0.0095 (delta method, and 12 other seeds), and
    # its bias Σ(σa² + σb²)/n ≈ 4e-5; rel 0.02 (0.048) is 5 standard deviations. (rel 0.01 was 2.6.)
    # Forgetting a square root or the factor 2 in the cross term changes FID by more than 1.
    assert metrics.fid(a, b) == pytest.approx(expected, rel=0.02)


def test_fid_with_full_covariances_matches_the_matrix_formula():
    """Non-commuting covariances, checked against an independent eigen-based evaluation."""
    cov_a = np.array([[2.0, 0.8], [0.8, 1.0]])
    cov_b = np.array([[1.0, -0.3], [-0.3, 0.5]])
    a = gaussian(400_000, [0.0, 0.0], cov_a, 2)
    b = gaussian(400_000, [1.0, 0.0], cov_b, 3)
    # tr((cov_a cov_b)^{1/2}) = sum of square roots of the eigenvalues of cov_a cov_b (all real, ≥ 0)
    cross = np.sqrt(np.linalg.eigvals(cov_a @ cov_b).real).sum()
    expected = 1.0 + np.trace(cov_a) + np.trace(cov_b) - 2 * cross
    # Monte Carlo: standard deviation 0.006 over 12 other seeds; rel 0.02 (0.035) is 5.8 of them.
    assert metrics.fid(a, b) == pytest.approx(expected, rel=0.02)


def test_fid_of_identical_sets_is_zero_and_is_symmetric():
    a = gaussian(500, [0.0] * 8, np.eye(8), 4)
    # float64 features: tr(2C − 2(C·C)^{1/2}) with a float64 matrix square root leaves ~1e-12·tr C ≈ 1e-11
    assert abs(metrics.fid(a, a)) < 1e-8
    b = gaussian(500, [0.3] * 8, np.eye(8) * 2, 5)
    # the square roots of C_a·C_b and C_b·C_a agree to ~1e-12 relative in float64; rel 1e-6 only
    # guards against an asymmetric formula, which is off by O(1)
    assert metrics.fid(a, b) == pytest.approx(metrics.fid(b, a), rel=1e-6)


def test_kid_is_unbiased_on_identical_distributions():
    a = gaussian(2000, [0.0] * 4, np.eye(4), 6).float()
    b = gaussian(2000, [0.0] * 4, np.eye(4), 7).float()
    mean, std = metrics.kid(a, b, num_subsets=50, subset_size=500, generator=torch.Generator().manual_seed(0))
    # zero within 3 standard errors (std/√50; subsets overlap, so this understates the spread and the
    # test is conservative), plus 1e-4 for float32 kernel means over 500² pairs of size ≤ 10
    # (cascade summation: ≈ log2(250,000)·u·10 ≈ 1e-5)
    assert abs(mean) < 3 * std / math.sqrt(50) + 1e-4
    shifted = b + 1.0
    mean_shifted, _ = metrics.kid(a, shifted, num_subsets=10, subset_size=500, generator=torch.Generator().manual_seed(0))
    assert mean_shifted > 20 * std  # a unit shift in 4 dims is far outside the spread of KID between equal distributions


def test_psnr_known_values():
    x = torch.full((2, 1, 16, 16), -0.5)  # a constant grey (an all-positive batch would look like [0, 1] images)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # identical images: inf, without a divide-by-zero warning
        assert torch.isinf(metrics.psnr(x, x)).all() and metrics.psnr(x, x).dtype == torch.float64
    # an error of 0.1 in [-1, 1] is 0.05 in [0, 1]: PSNR = 10 log10(1 / 0.05²) ≈ 26.02 dB
    # x + 0.1 is rounded once in float32 (to −0.39999999): the error is 0.1 off by 6e-8 relative, the MSE
    # by 1.2e-7 and the PSNR by 5e-7 dB, inside the float64 defaults (atol 1e-7 + rtol 1e-7·26 ≈ 2.7e-6).
    torch.testing.assert_close(metrics.psnr(x, x + 0.1), torch.full((2,), 10 * math.log10(1 / 0.05**2), dtype=torch.float64))


def test_ssim_known_values():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 1, 32, 32, generator=g) * 2 - 1
    # with y = x each factor of SSIM's numerator is computed exactly as its denominator (2·μ² = μ² + μ²
    # in floating point), so the ratio is 1 to the last bit
    torch.testing.assert_close(metrics.ssim(x, x), torch.ones(3, dtype=torch.float64), rtol=0, atol=0)
    noisy = (x + 0.5 * torch.randn(x.shape, generator=g)).clamp(-1, 1)
    values = metrics.ssim(x, noisy)
    assert bool((values < 0.9).all()) and bool((values > -1).all())
    less_noisy = (x + 0.1 * torch.randn(x.shape, generator=g)).clamp(-1, 1)
    assert bool((metrics.ssim(x, less_noisy) > values).all())


def test_class_metrics():
    logits = torch.tensor([[5.0, 0.0], [0.0, 5.0], [0.1, 0.0], [9.0, 0.0]])
    labels = torch.tensor([0, 1, 1, 0])
    assert metrics.class_accuracy(logits, labels) == 0.75
    assert metrics.confident_fraction(logits, 0.9) == 0.75
    torch.testing.assert_close(metrics.class_histogram(logits, 2), torch.tensor([0.75, 0.25]), rtol=0, atol=0)  # counts / 4: exact


def test_nearest_neighbours():
    refs = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    distances, indices = metrics.nearest_neighbours(torch.tensor([[9.0, 1.0], [0.5, 0.0]]), refs, k=2)
    assert indices.tolist() == [[1, 0], [0, 1]]
    torch.testing.assert_close(distances[1, 0], torch.tensor(0.5))  # √0.25 of exactly representable values: one rounding at most


def test_metrics_bad_inputs():
    a = torch.randn(10, 4)
    with pytest.raises(ValueError, match="features_a must have shape"):
        metrics.fid(torch.randn(10), a)
    with pytest.raises(ValueError, match="same feature size"):
        metrics.fid(a, torch.randn(10, 5))
    with pytest.raises(ValueError, match="more samples than feature dimensions"):
        metrics.fid(torch.randn(3, 4), a)
    with pytest.raises(ValueError, match=r"images must lie in \[-1, 1\]"):
        metrics.psnr(torch.zeros(1, 1, 4, 4), torch.full((1, 1, 4, 4), 3.0))
    with pytest.raises(ValueError, match="same shape"):
        metrics.ssim(torch.zeros(1, 1, 8, 8), torch.zeros(2, 1, 8, 8))
    with pytest.raises(ValueError, match="threshold"):
        metrics.confident_fraction(torch.zeros(2, 10), 1.5)
    with pytest.raises(ValueError, match="k must lie in"):
        metrics.nearest_neighbours(a, a, k=0)


def test_every_number_names_its_device():
    assert dh.describe_device("cpu").startswith("CPU (") and dh.describe_device is dh.runtime.describe_device
    assert not hasattr(metrics, "describe_device")  # one home: the runtime, not the metrics


def test_classifier_shapes_and_augmentation():
    model = dh.MNISTClassifier()
    x = torch.rand(4, 1, 32, 32) * 2 - 1
    out = metrics.classify(model, x, batch_size=3)
    assert out.features.shape == (4, 128) and out.logits.shape == (4, 10)
    background = -torch.ones(2, 1, 32, 32)
    augmented = dh.classifier.augment(background, torch.Generator().manual_seed(0))
    torch.testing.assert_close(augmented, background)  # shifts pad with background, not grey


def _small_training_set(n: int = 40) -> dh.ImageSet:
    g = torch.Generator().manual_seed(1)
    return dh.ImageSet(torch.rand(n, 1, 32, 32, generator=g) * 2 - 1, torch.randint(0, 10, (n,), generator=g))


def test_a_stopped_classifier_training_resumes_to_the_uninterrupted_result(tmp_path, monkeypatch):
    """Stopped in the middle of its second epoch and called again with the same checkpoint, the training
    ends with the weights of the run that was never stopped: the shuffling/augmentation generator, the
    global random state of dropout, the optimiser and the one-cycle schedule all resume. On the CPU the
    arithmetic is the same sequence of operations in both runs, so the weights are equal bit for bit (no tolerance)."""
    data = _small_training_set()
    settings = dict(epochs=3, batch_size=16, lr=3e-3, seed=0, progress=False)
    reference, _ = dh.train_classifier(data, **settings)

    calls, real_augment = [], dh.classifier.augment

    def stop_in_epoch_two(x, generator):
        calls.append(1)
        if len(calls) == 5:  # 3 batches per epoch: the 5th call is the second batch of epoch 2
            raise KeyboardInterrupt
        return real_augment(x, generator)

    path = tmp_path / "state" / "classifier.pt"
    path.parent.mkdir()
    monkeypatch.setattr(dh.classifier, "augment", stop_in_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        dh.train_classifier(data, **settings, checkpoint=path)
    monkeypatch.setattr(dh.classifier, "augment", real_augment)
    assert path.is_file() and not list(path.parent.glob("*.tmp"))  # epoch 1's state, written atomically
    resumed, seconds = dh.train_classifier(data, **settings, checkpoint=path)
    assert seconds > 0
    for (name, a), b in zip(reference.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    again, _ = dh.train_classifier(data, **settings, checkpoint=path)  # a finished checkpoint: nothing left to train
    assert all(torch.equal(a, b) for a, b in zip(reference.state_dict().values(), again.state_dict().values()))


def test_a_classifier_checkpoint_refuses_other_settings_or_data(tmp_path):
    data, path = _small_training_set(), tmp_path / "classifier.pt"
    dh.train_classifier(data, epochs=1, batch_size=16, progress=False, checkpoint=path)
    with pytest.raises(ValueError, match=r"other settings or data: epochs: checkpoint 1 vs now 2"):
        dh.train_classifier(data, epochs=2, batch_size=16, progress=False, checkpoint=path)
    other = dh.ImageSet(data.images.flip(0), data.labels)
    with pytest.raises(ValueError, match=r"data_sha256"):
        dh.train_classifier(other, epochs=1, batch_size=16, progress=False, checkpoint=path)
    with pytest.raises(ValueError, match="checkpoint must name a file, got the directory"):
        dh.train_classifier(data, epochs=1, progress=False, checkpoint=tmp_path)
    with pytest.raises(ValueError, match="epochs must be a positive int, got 0"):
        dh.train_classifier(data, epochs=0, progress=False)
    with pytest.raises(ValueError, match="batch_size must be a positive int, got 2.5"):
        dh.train_classifier(data, batch_size=2.5, progress=False)


@pytest.mark.slow
def test_shipped_classifier_recognises_the_bundled_test_digits(cfg):
    """The bundled test images are official MNIST test images, never trained on."""
    test = dh.load_mnist("test", cfg)
    classified = metrics.classify(dh.load_classifier(), test.images)
    accuracy = metrics.class_accuracy(classified.logits, test.labels)
    assert accuracy >= 0.99
    card = dh.classifier_card()
    assert card.quality["test_accuracy"].num_samples == 10_000 and card.quality["test_accuracy"].value >= 0.993
    assert card.quality["test_confident_fraction"].value >= 0.97  # real digits clear the "confident" bar that samples must


@pytest.mark.slow
def test_fid_between_real_sets_is_far_below_fid_to_noise(cfg):
    """Real vs real is the floor; images of pure noise are far away in the classifier's features."""
    classifier = dh.load_classifier()
    test = dh.load_mnist("test", cfg).images
    train = dh.load_mnist("train", cfg, num_images=500).images
    noise = torch.rand(500, 1, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    real_a, real_b = metrics.classify(classifier, test[:500]).features, metrics.classify(classifier, train).features
    fake = metrics.classify(classifier, noise).features
    assert metrics.fid(real_a, real_b) < 0.05 * metrics.fid(real_a, fake)


def test_corrupt_classifier_weights_are_refused(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"garbage")
    with pytest.raises(ValueError, match="does not match the SHA-256 its card records"):
        dh.load_classifier(weights=bad)  # the shipped card records the shipped file's bytes
    card = json.loads(dh.classifier.CLASSIFIER_CARD.read_text())
    card_path = tmp_path / "bad.json"
    card_path.write_text(json.dumps({**card, "sha256": hashlib.sha256(b"garbage").hexdigest()}))
    with pytest.raises(ValueError, match="corrupt"):
        dh.load_classifier(weights=bad, card_path=card_path)  # the bytes match their card, but are no weights
    with pytest.raises(FileNotFoundError, match="no classifier weights at .*train_classifier.py"):
        dh.load_classifier(weights=tmp_path / "missing.pt")


@pytest.mark.slow
def test_quality_report_of_real_digits(cfg):
    classifier = dh.load_classifier()
    test = dh.load_mnist("test", cfg).images
    reference = metrics.classify(classifier, test[:300]).features
    report = metrics.quality_report(classifier, test[300:600], reference)
    assert report.num_samples == 300 and report.confident_fraction > 0.95
    # the shares are float32 fractions k/300: their sum is within 10·u ≈ 6e-7 of 1, and 1e-3 is below
    # the 1/300 = 3.3e-3 that one lost image would cost
    assert report.min_class_share > 0.05 and abs(sum(report.class_shares) - 1) < 1e-3
    assert report.fid < 5.0


def test_a_point_is_its_own_nearest_neighbour_at_distance_zero():
    refs = torch.randn(50, 128, generator=torch.Generator().manual_seed(0)) * 10
    distances, indices = metrics.nearest_neighbours(refs[:5], refs)
    assert indices.flatten().tolist() == [0, 1, 2, 3, 4]
    assert float(distances.abs().max()) == 0.0


def test_fid_of_one_dimensional_gaussians_is_the_closed_form():
    """For D = 1, FID = (mu_a - mu_b)^2 + (sigma_a - sigma_b)^2 (and numpy's 0-d covariance must not break it)."""
    g = torch.Generator().manual_seed(0)
    value = metrics.fid(torch.randn(100_000, 1, generator=g), 1 + 2 * torch.randn(100_000, 1, generator=g))
    # Monte Carlo: standard deviation 0.0147 over 12 other seeds (delta method: 2·√(5/n) and 2·√(5/2n)
    # combined, 0.017); abs 0.075 is 5 of them. (abs 0.05 was 3.4.)
    assert value == pytest.approx(2.0, abs=0.075)
