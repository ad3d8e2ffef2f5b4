import hashlib
import json
import shutil

import pytest
import torch

import ddpm_helpers as dh


def save_toy(cfg, directory, card=None, **kwargs):
    torch.manual_seed(0)
    model = dh.UNet(cfg.unet)
    torch.nn.init.normal_(model.head[-1].weight, std=0.1)
    path = dh.save_pretrained(model, "toy", {} if card is None else card, diffusion=cfg.diffusion, directory=directory, **kwargs)
    return model, path


def test_pretrained_round_trip_in_half_precision(tmp_path, cfg):
    model, path = save_toy(cfg, tmp_path, {"fid": 1.0})
    loaded, diffusion = dh.load_pretrained("toy", directory=tmp_path)
    card = dh.pretrained_card("toy", directory=tmp_path)
    assert diffusion == cfg.diffusion and loaded.config == cfg.unet and card["fid"] == 1.0
    assert card["kind"] == "ddpm-unet" and card["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert isinstance(dh.load_pretrained("toy", directory=tmp_path), dh.Pretrained)
    assert not loaded.training and next(loaded.parameters()).dtype == torch.float32
    x, t = torch.randn(2, 1, 32, 32), torch.tensor([5, 500])
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, t), model(x, t), rtol=1e-2, atol=1e-2)  # fp16 storage


def test_pretrained_refuses_another_config_and_unknown_names(tmp_path, cfg):
    save_toy(cfg, tmp_path)
    cosine = cfg.diffusion.replace(schedule="cosine")
    with pytest.raises(ValueError, match=r"does not match this configuration: diffusion: weights DiffusionConfig\(T=1000, schedule='linear'\) vs asked DiffusionConfig\(T=1000, schedule='cosine'\)"):
        dh.load_pretrained("toy", diffusion=cosine, directory=tmp_path)
    with pytest.raises(ValueError, match=r"does not match this configuration: network: weights UNetConfig\(channels=8.* vs asked UNetConfig\(channels=16"):
        dh.load_pretrained("toy", unet=cfg.unet.replace(channels=16), directory=tmp_path)
    model, diffusion = dh.load_pretrained("toy", unet=cfg.unet, diffusion=cfg.diffusion, directory=tmp_path)  # asked and saved agree
    assert model.config == cfg.unet and diffusion == cfg.diffusion
    with pytest.raises(FileNotFoundError, match=r"no pretrained model named 'nope'; available: \['toy'\]"):
        dh.load_pretrained("nope", directory=tmp_path)


def test_damaged_weights_are_refused(tmp_path, cfg):
    save_toy(cfg, tmp_path)
    (tmp_path / "toy.pt").write_bytes(b"junk")
    with pytest.raises(ValueError, match="toy.pt does not match the SHA-256 its card records"):
        dh.load_pretrained("toy", directory=tmp_path)
    card = json.loads((tmp_path / "toy.json").read_text())  # a card that vouches for the junk: still refused
    (tmp_path / "toy.json").write_text(json.dumps({**card, "sha256": hashlib.sha256(b"junk").hexdigest()}))
    with pytest.raises(ValueError, match="corrupt"):
        dh.load_pretrained("toy", directory=tmp_path)


def test_weights_swapped_with_another_models_are_refused(tmp_path):
    for name in ("unconditional", "conditional"):
        for suffix in (".pt", ".json"):
            shutil.copy(dh.WEIGHTS_DIR / f"{name}{suffix}", tmp_path / f"{name}{suffix}")
    shutil.copy(tmp_path / "conditional.pt", tmp_path / "unconditional.pt")
    with pytest.raises(ValueError, match=r"'unconditional'.*unconditional.pt does not match the SHA-256 its card records"):
        dh.load_pretrained("unconditional", directory=tmp_path)
    assert dh.load_pretrained("conditional", directory=tmp_path).model.num_classes == 10


def test_a_card_of_another_kind_is_refused(tmp_path, cfg):
    save_toy(cfg, tmp_path)
    card = json.loads((tmp_path / "toy.json").read_text())
    (tmp_path / "toy.json").write_text(json.dumps({**card, "kind": "autoencoder"}))
    with pytest.raises(ValueError, match="the weights are a 'ddpm-unet' but the card says 'autoencoder'"):
        dh.load_pretrained("toy", directory=tmp_path)


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", '{"kind": "ddpm-unet"}', '{"kind": "vae", "sha256": "00"}'])
def test_an_invalid_card_is_refused_by_name(tmp_path, cfg, text):
    save_toy(cfg, tmp_path)
    (tmp_path / "toy.json").write_text(text)
    with pytest.raises(ValueError, match=r"the card toy.json of pretrained model 'toy'"):
        dh.pretrained_card("toy", directory=tmp_path)
    with pytest.raises(ValueError, match=r"the card toy.json"):
        dh.load_pretrained("toy", directory=tmp_path)


def test_save_pretrained_refuses_weights_beyond_half_precision(tmp_path, cfg):
    model = dh.UNet(cfg.unet)
    with torch.no_grad():
        model.head[-1].weight[0, 0, 0, 0] = 1e5  # fp16 tops out at 65504
    with pytest.raises(ValueError, match=r"weight 'head.2.weight' reaches 1e\+05, beyond half precision's range"):
        dh.save_pretrained(model, "toy", {}, diffusion=cfg.diffusion, directory=tmp_path)
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_save_pretrained_needs_the_diffusion_of_a_diffusion_network(tmp_path, cfg):
    with pytest.raises(ValueError, match="diffusion must be given for a diffusion network"):
        dh.save_pretrained(dh.UNet(cfg.unet), "toy", {}, diffusion=None, directory=tmp_path)
    with pytest.raises(ValueError, match="model must be one of"):
        dh.save_pretrained(torch.nn.Linear(2, 2), "toy", {}, diffusion=cfg.diffusion, directory=tmp_path)


@pytest.mark.parametrize("name,num_classes", [("unconditional", None), ("conditional", 10)])
def test_shipped_models_load_with_their_cards(name, num_classes):
    """The weights in the package load as the model their card describes; a conditional one uses its label."""
    model, diffusion = dh.load_pretrained(name, unet=dh.FULL.unet.replace(num_classes=num_classes), diffusion=dh.FULL.diffusion)
    card = dh.pretrained_card(name)
    assert model.num_classes == num_classes and card["steps"] == card["train_config"]["num_train_steps"]
    assert card["fid_num_samples"] == dh.FULL.num_fid_samples and not model.training
    assert diffusion == dh.FULL.diffusion and card["kind"] == "ddpm-unet"
    x, t = torch.randn(3, 1, 32, 32, generator=torch.Generator().manual_seed(0)), torch.tensor([100, 500, 900])
    with torch.no_grad():
        if num_classes is None:
            assert torch.isfinite(model(x, t)).all()
        else:
            by_label = [model(x, t, torch.full((3,), k)) for k in (1, 7, num_classes)]
            assert all(not torch.allclose(a, b, atol=1e-3) for a, b in zip(by_label, by_label[1:]))
