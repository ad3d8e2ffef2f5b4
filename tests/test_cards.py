"""The card schema and its binding to the weights (issue 25 item 3, issue 26 class 1): what a model
needs to work lives inside the checksummed weights, and a card that disagrees with them is refused."""

import collections
import dataclasses
import hashlib
import json
import math
import shutil

import pytest
import torch

import ddpm_helpers as dh
from ddpm_helpers.cards import LatentLink, Measure, ModelCard, Provenance, read_card, write_card

PROVENANCE = Provenance(date="2026-12-02", device="cpu", train_seconds=2.0, num_train_images=512, num_steps=4, trained_by="tests/test_cards.py")
AE_CONFIG = dh.AutoencoderConfig(channels=(8, 8), latent_channels=2)  # latents (2, 8, 8)
LATENT_UNET = dh.UNetConfig(channels=8, channel_mults=(1,), num_res_blocks=1, attention_resolutions=(), patch_size=1, image_channels=2, image_size=8)


def save(model, name, directory, **options):
    defaults = dict(diffusion=None, provenance=PROVENANCE, quality={"fid": Measure(2.5, 200, "ddim-2")}, train_config=None)
    return dh.save_pretrained(model, name, directory=directory, **{**defaults, **options})


@pytest.fixture
def shelf(tmp_path):
    """A folder with two autoencoders, a latent model linked to the first, and a pixel model."""
    torch.manual_seed(0)
    save(dh.Autoencoder(AE_CONFIG), "ae", tmp_path)
    save(dh.Autoencoder(AE_CONFIG), "other_ae", tmp_path)
    link = LatentLink(scale=0.37, autoencoder="ae", autoencoder_sha256=dh.pretrained_card("ae", tmp_path).sha256, value_range=(-3.5, 3.25))
    save(dh.UNet(LATENT_UNET), "lat", tmp_path, diffusion=dh.DiffusionConfig(), latent=link, train_config={"lr": 2e-3})
    save(dh.UNet(dh.TINY.unet), "pix", tmp_path, diffusion=dh.DiffusionConfig())
    return tmp_path


def edit_card(path, **changes):
    card = json.loads(path.read_text())
    for key, value in changes.items():
        section, _, field = key.partition(".")
        if field:
            card[section][field] = value
        else:
            card[section] = value
    path.write_text(json.dumps(card))


def test_a_card_round_trips_through_json_and_is_written_atomically(shelf):
    card = dh.pretrained_card("lat", shelf)
    assert ModelCard.from_dict(json.loads(json.dumps(card.to_dict()))) == card
    assert card.latent.scale == 0.37 and card.train_config == {"lr": 2e-3} and card.provenance == PROVENANCE
    assert card.identity() == {"name": "lat", "kind": "ddpm-unet", "network": LATENT_UNET.to_dict(), "diffusion": dh.DiffusionConfig().to_dict(),
                               "latent": dataclasses.asdict(card.latent)}
    assert card.latent.value_range == (-3.5, 3.25)  # a JSON list read back as the tuple it was
    copy = write_card(card, shelf / "copy.json")
    assert read_card(copy, "the copy") == card and not list(shelf.glob("*.tmp"))
    assert card.sha256 == hashlib.sha256((shelf / "lat.pt").read_bytes()).hexdigest()


@pytest.mark.parametrize("change,message", [
    (dict(card_version=2), r"card_version must be 1"),
    (dict(lr_cooldown_steps=6000), r"unknown \['lr_cooldown_steps'\]"),
    (dict(train_config={"lr_cooldown_steps": 6000}), r"train_config of a 'ddpm-unet' holds unknown settings \['lr_cooldown_steps'\]"),
    (dict(sha256="abc"), r"sha256 must be a SHA-256 as 64 lowercase hex digits, got 'abc'"),
    (dict(kind="vae"), r"kind must be one of \['ddpm-unet', 'flow-unet', 'autoencoder', 'mnist-classifier'\], got 'vae'"),
    (dict(name="../evil"), r"name must be a file stem"),
    (dict(diffusion=None), r"diffusion must be a dict for a 'ddpm-unet' or 'flow-unet'"),
    (dict(quality={"fid": {"value": 1.0}}), r"latent, provenance or quality is malformed"),
    (dict(quality={"fid": 1.0}), r"latent, provenance or quality is malformed"),
    (dict(provenance={"date": "today"}), r"latent, provenance or quality is malformed"),
    (dict(**{"provenance.num_train_images": "many"}), r"provenance.num_train_images must be int or None"),
    (dict(**{"latent.scale": -1.0}), r"latent.scale must be a positive finite number"),
    (dict(**{"latent.autoencoder_sha256": "ae"}), r"latent.autoencoder_sha256 must be a SHA-256"),
    (dict(**{"latent.value_range": [3.0, -3.0]}), r"latent.value_range must be None or a pair \(low, high\) .* got \[3.0, -3.0\]"),
    (dict(**{"latent.value_range": [-3.0]}), r"latent.value_range must be None or a pair"),
    (dict(**{"latent.value_range": "wide"}), r"latent.value_range must be None or a pair"),
])
def test_a_card_outside_the_schema_is_refused_by_field(shelf, change, message):
    edit_card(shelf / "lat.json", **change)
    with pytest.raises(ValueError, match=r"the card lat.json of pretrained model 'lat' does not follow the card schema: .*" + message):
        dh.pretrained_card("lat", shelf)
    with pytest.raises(ValueError, match=message):
        dh.load_pretrained("lat", directory=shelf)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, "1.0", True])
def test_a_measure_must_be_a_finite_number(value):
    with pytest.raises(ValueError, match=r"a measure's value must be a finite number \(a card is strict JSON\), got"):
        Measure(value, 10)


def test_write_card_makes_strict_json_before_opening_a_file():
    card = dh.pretrained_card("unconditional")
    object.__setattr__(card.quality["fid"], "value", math.inf)  # past the constructor's check, as a hand-edited object could be
    with pytest.raises(ValueError, match="Out of range float values are not JSON compliant"):
        write_card(card, "/nonexistent/never-written.json")  # refused before the (impossible) file is opened


@pytest.mark.parametrize("field,value,message", [
    ("latent.scale", 0.5, r"latent: weights \{'scale': 0.37, .* vs card \{'scale': 0.5"),  # issue 26: an edited scale silently degraded every sample
    ("latent.autoencoder", "other_ae", r"latent: weights .*'autoencoder': 'ae'.* vs card .*'autoencoder': 'other_ae'"),
    ("latent.value_range", [-1.0, 1.0], r"latent: weights .*'value_range': \(-3.5, 3.25\).* vs card .*'value_range': \(-1.0, 1.0\)"),
    ("diffusion.prediction", "v", r"diffusion: weights \{'T': 1000, 'schedule': 'linear', 'prediction': 'eps'\} vs card .*'prediction': 'v'"),
    ("diffusion.T", 500, r"diffusion: weights .*'T': 1000.* vs card .*'T': 500"),
    ("network.channels", 16, r"network: weights .*'channels': 8.* vs card .*'channels': 16"),
    ("latent", None, r"latent: weights \{'scale': 0.37.* vs card None"),
])
def test_a_card_that_disagrees_with_its_weights_is_refused_naming_the_field(shelf, field, value, message):
    edit_card(shelf / "lat.json", **{field: value})
    with pytest.raises(ValueError, match=r"pretrained model 'lat': the card disagrees with the weights it describes on " + message):
        dh.load_pretrained("lat", directory=shelf)


def test_a_card_or_weights_under_another_name_are_refused(shelf):
    shutil.copy(shelf / "pix.json", shelf / "copy.json")  # a card whose own name is another model's
    shutil.copy(shelf / "pix.pt", shelf / "copy.pt")
    with pytest.raises(ValueError, match=r"its card copy.json names the model 'pix', not 'copy'"):
        dh.load_pretrained("copy", directory=shelf)
    edit_card(shelf / "copy.json", name="copy")  # the card renamed too: the weights still say 'pix'
    with pytest.raises(ValueError, match=r"the weights copy.pt are the model 'pix', not 'copy'; weights load only under their own name"):
        dh.load_pretrained("copy", directory=shelf)


def test_weights_without_an_identity_are_refused(shelf):
    """A file of the format before identities (no name inside) does not load as a model."""
    payload = torch.load(shelf / "pix.pt", weights_only=True)
    for key in ("name", "latent", "content_sha256", "format_version"):
        payload.pop(key)
    sha = dh.weights.write_atomic(payload, shelf / "pix.pt")
    edit_card(shelf / "pix.json", sha256=sha)
    with pytest.raises(ValueError, match=r"pix.pt does not say which model it is \(no name inside\)"):
        dh.load_pretrained("pix", directory=shelf)


def test_a_latent_model_decodes_only_through_its_own_autoencoder(shelf):
    latent = dh.load_latent_model("lat", directory=shelf)
    assert latent.latent_scale == 0.37 and latent.autoencoder.config == AE_CONFIG
    assert latent.space == dh.DataSpace(AE_CONFIG.latent_shape, (-3.5, 3.25))  # sampled clipped to its training latents' range
    with pytest.raises(ValueError, match=r"autoencoder: the latent model 'lat' was trained with the autoencoder 'ae' whose weights have SHA-256 .* but 'other_ae' has"):
        dh.load_latent_model("lat", autoencoder="other_ae", directory=shelf)
    for suffix in (".pt", ".json"):  # another autoencoder published under the same name
        shutil.copy(shelf / f"other_ae{suffix}", shelf / f"ae{suffix}")
    edit_card(shelf / "ae.json", name="ae")
    payload = torch.load(shelf / "ae.pt", weights_only=True)
    payload["name"] = "ae"
    dh.weights.write_atomic({k: v for k, v in payload.items() if k not in ("content_sha256", "format_version")}, shelf / "ae.pt")
    edit_card(shelf / "ae.json", sha256=dh.weights.sha256_of(shelf / "ae.pt"))
    dh.load_pretrained("ae", directory=shelf)  # a valid autoencoder on its own ...
    with pytest.raises(ValueError, match=r"the latent model 'lat' was trained with the autoencoder 'ae'"):
        dh.load_latent_model("lat", directory=shelf)  # ... but not the one the latent model belongs to
    with pytest.raises(ValueError, match=r"name: 'pix' is not a latent diffusion model"):
        dh.load_latent_model("pix", directory=shelf)


def test_the_classifier_is_saved_and_loaded_through_the_same_path(tmp_path):
    torch.manual_seed(0)
    model = dh.MNISTClassifier().eval()
    weights = save(model, "mnist_classifier", tmp_path, quality={"test_accuracy": Measure(0.5, 10)}, train_config={"epochs": 1, "seed": 0})
    card = dh.classifier_card(weights.with_suffix(".json"))
    assert card.kind == "mnist-classifier" and card.network == {} and card.train_config == {"epochs": 1, "seed": 0}
    loaded = dh.load_classifier("cpu", weights, weights.with_suffix(".json"))
    x = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        # half-precision storage (relative rounding 2^-11 per weight) through six conv layers with batch norm: logits of size ~1 move by ~1e-2 at most
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=5e-2)
    assert isinstance(dh.load_pretrained("mnist_classifier", directory=tmp_path).model, dh.MNISTClassifier)
    shutil.copy(weights, tmp_path / "renamed.pt")
    with pytest.raises(ValueError, match=r"the weights renamed.pt are the model 'mnist_classifier', not 'renamed'"):
        dh.cards.read_model(tmp_path / "renamed.pt", _renamed_card(weights, tmp_path), "renamed", "the MNIST classifier")


def _renamed_card(weights, directory):
    path = directory / "renamed.json"
    shutil.copy(weights.with_suffix(".json"), path)
    edit_card(path, name="renamed")
    return path


def test_a_latent_model_that_records_no_range_loads_as_before_and_is_sampled_unclipped(tmp_path):
    """Weights saved before ranges were recorded carry no value_range key; they still load, in a space with no range."""
    save(dh.Autoencoder(AE_CONFIG), "ae", tmp_path)
    link = LatentLink(scale=0.37, autoencoder="ae", autoencoder_sha256=dh.pretrained_card("ae", tmp_path).sha256)
    save(dh.UNet(LATENT_UNET), "old", tmp_path, diffusion=dh.DiffusionConfig(), latent=link)
    assert "value_range" not in torch.load(tmp_path / "old.pt", weights_only=True)["latent"]
    assert "value_range" not in json.loads((tmp_path / "old.json").read_text())["latent"]
    latent = dh.load_latent_model("old", directory=tmp_path)
    assert latent.space == dh.DataSpace(AE_CONFIG.latent_shape) and latent.space.value_range is None


def test_seed_quality_is_the_mean_over_seeds_with_the_rarest_class_and_the_spread_in_the_notes():
    Report = collections.namedtuple("Report", "fid confident_fraction min_class_share")
    reports = [Report(2.0, 0.90, 0.07), Report(3.0, 0.86, 0.05), Report(4.0, 0.88, 0.09)]
    quality, notes = dh.cards.seed_quality(reports, num_samples=1000, sampler="dpm-solver++-sde-20", first_seed=4)
    assert quality["fid"] == Measure(3.0, 1000, "dpm-solver++-sde-20") and quality["confident_fraction"].value == 0.88
    assert quality["min_class_share"].value == 0.05  # the least over the seeds, not the mean
    assert "sampling seeds 4-6, 1000 samples each" in notes and "confident 0.0200, fid 1.00" in notes  # sample sd (n - 1)
    one, notes_one = dh.cards.seed_quality(reports[:1], num_samples=1000, sampler="x", first_seed=0)
    assert one["fid"].value == 2.0 and "sampling seed 0," in notes_one and "spread" not in notes_one
    with pytest.raises(ValueError, match="reports must hold at least one"):
        dh.cards.seed_quality([], num_samples=1000, sampler="x", first_seed=0)
