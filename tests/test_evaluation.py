import pytest
import torch

import ddpm_helpers as dh


@pytest.mark.slow
def test_real_reference_and_sample_quality(cfg):
    train, test = dh.load_mnist("train", cfg).images, dh.load_mnist("test", cfg).images
    reference = dh.evaluation.real_reference(train, test, 200)
    assert reference.num_samples == 200 and reference.features.shape == (200, 128)
    assert 0 < reference.fid_floor < 20  # two real sets are close in the classifier's features
    torch.manual_seed(0)
    model = dh.UNet(cfg.unet)
    assert cfg.judge == dh.SamplerSpec("dpm-solver++-sde", num_steps=2)  # the book's judge in tiny mode
    report, samples = dh.evaluation.sample_quality(model, dh.make_schedule("cosine", 20), reference, cfg.judge)
    assert samples.shape == (200, 1, 32, 32) and report.num_samples == 200
    assert report.fid > 10 * reference.fid_floor  # an untrained network draws noise, far from digits


def test_real_reference_needs_enough_images(cfg):
    images = dh.load_mnist("test", cfg).images[:50]
    with pytest.raises(ValueError, match=r"num_samples \(200\) exceeds"):
        dh.evaluation.real_reference(images, images, 200)
    with pytest.raises(ValueError, match="must exceed the 128 feature dimensions"):
        dh.evaluation.real_reference(images, images, 128)


def test_real_reference_judges_with_the_classifier_of_the_data_set(cfg, monkeypatch, tmp_path):
    """The judge is chosen by ``dataset=``: MNIST's classifier by default, the shipped Fashion-MNIST
    judge when asked (a clear error where it is missing), never MNIST's for clothes silently."""
    asked = []
    real_load = dh.evaluation.load_classifier
    monkeypatch.setattr(dh.evaluation, "load_classifier", lambda device, *, dataset: asked.append(dataset) or real_load(device, dataset=dataset))
    images = dh.load_mnist("test", cfg).images[:200]
    digits = dh.evaluation.real_reference(images, images, 200)
    clothes = dh.evaluation.real_reference(images, images, 200, dataset="fashion-mnist")
    assert asked == ["mnist", "fashion-mnist"]
    for reference, judge in ((digits, dh.load_classifier()), (clothes, dh.load_classifier(dataset="fashion-mnist"))):
        assert all(torch.equal(a, b) for a, b in zip(reference.classifier.state_dict().values(), judge.state_dict().values()))
    assert not torch.equal(digits.features, clothes.features)  # two judges, two feature spaces for the same images
    monkeypatch.setattr(dh.classifier, "WEIGHTS_DIR", tmp_path)  # a package without the clothes' judge
    with pytest.raises(FileNotFoundError, match="Fashion-MNIST classifier is not shipped yet"):
        dh.evaluation.real_reference(images, images, 200, dataset="fashion-mnist")
