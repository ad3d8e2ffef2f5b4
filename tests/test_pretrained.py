import pytest
import torch

import ddpm_helpers as dh


def test_pretrained_round_trip_in_half_precision(tmp_path, cfg):
    torch.manual_seed(0)
    model = dh.make_unet(cfg)
    torch.nn.init.normal_(model.head[-1].weight, std=0.1)
    dh.save_pretrained(model, cfg, {"fid": 1.0}, "toy", directory=tmp_path)
    loaded, saved_cfg = dh.load_pretrained("toy", cfg, directory=tmp_path)
    assert saved_cfg == cfg and dh.pretrained_card("toy", directory=tmp_path)["fid"] == 1.0
    x, t = torch.randn(2, 1, 32, 32), torch.tensor([5, 500])
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, t), model(x, t), rtol=1e-2, atol=1e-2)  # fp16 storage


def test_pretrained_refuses_another_config_and_unknown_names(tmp_path, cfg):
    dh.save_pretrained(dh.make_unet(cfg), cfg, {}, "toy", directory=tmp_path)
    with pytest.raises(ValueError, match=r"does not match this configuration: schedule: weights 'linear' vs config 'cosine'"):
        dh.load_pretrained("toy", cfg.replace(schedule="cosine"), directory=tmp_path)
    with pytest.raises(FileNotFoundError, match=r"no pretrained model named 'nope'; available: \['toy'\]"):
        dh.load_pretrained("nope", directory=tmp_path)
    (tmp_path / "toy.pt").write_bytes(b"junk")
    with pytest.raises(ValueError, match="corrupt"):
        dh.load_pretrained("toy", directory=tmp_path)


@pytest.mark.parametrize("name,num_classes", [("unconditional", None), ("conditional", 10)])
def test_shipped_models_load_with_their_cards(name, num_classes):
    """The weights in the package load as the model their card describes; a conditional one uses its label."""
    model, saved_cfg = dh.load_pretrained(name)
    card = dh.pretrained_card(name)
    assert model.num_classes == num_classes and card["steps"] == saved_cfg.num_train_steps
    assert card["fid_num_samples"] == saved_cfg.num_fid_samples and not model.training
    x, t = torch.randn(3, 1, 32, 32, generator=torch.Generator().manual_seed(0)), torch.tensor([100, 500, 900])
    with torch.no_grad():
        if num_classes is None:
            assert torch.isfinite(model(x, t)).all()
        else:
            by_label = [model(x, t, torch.full((3,), k)) for k in (1, 7, num_classes)]
            assert all(not torch.allclose(a, b, atol=1e-3) for a, b in zip(by_label, by_label[1:]))
