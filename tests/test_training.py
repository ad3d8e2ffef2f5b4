import pytest
import torch

import ddpm_helpers as dh


@pytest.fixture
def data(cfg):
    return dh.load_mnist("train", cfg, num_images=64), dh.load_mnist("val", cfg)


def fresh_state(cfg, seed=0):
    torch.manual_seed(seed)
    return dh.init_train_state(dh.make_unet(cfg), cfg, "cpu")


def test_loss_falls_when_overfitting_one_batch(cfg, schedule):
    """A fixed batch and fixed (t, eps): the network must drive this loss well below its start."""
    config = cfg.replace(lr=3e-3, warmup_steps=1)
    state = fresh_state(config)
    x0 = dh.load_mnist("train", config, num_images=8).images
    g = torch.Generator().manual_seed(0)
    t, eps = torch.randint(0, 1000, (8,), generator=g), torch.randn(x0.shape, generator=g)
    def loss_of() -> float:
        with torch.no_grad():
            return float(dh.ddpm_loss(state.model, x0, schedule, t=t, eps=eps))

    before = loss_of()
    for _ in range(60):
        state.optimizer.zero_grad()
        dh.ddpm_loss(state.model, x0, schedule, t=t, eps=eps).backward()
        state.optimizer.step()
    assert loss_of() < 0.5 * before


def test_train_records_history_and_steps(cfg, schedule, data):
    train_set, val_set = data
    state = fresh_state(cfg)
    history = dh.train(state, train_set, schedule, cfg, num_steps=4, val_set=val_set, progress=False)
    assert state.step == 4 and len(history.train_loss) == 4
    assert history.val_steps == [2, 4] and len(history.val_loss) == 2
    assert all(v > 0 for v in history.val_loss) and state.elapsed > 0


def test_ema_is_a_moving_average():
    model = torch.nn.Linear(2, 1, bias=False)
    torch.nn.init.zeros_(model.weight)
    ema = dh.EMA(model, decay=0.5)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update(model)  # warm-up decay min(0.5, 2/11) = 2/11
    torch.testing.assert_close(ema.model.weight, torch.full((1, 2), 9 / 11))
    with pytest.raises(ValueError, match="decay"):
        dh.EMA(model, decay=1.0)


def test_learning_rate_warms_up(cfg):
    config = cfg.replace(lr=1.0, warmup_steps=4, lr_cooldown_steps=0)
    assert [dh.training.learning_rate(s, config) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]


def test_checkpoint_round_trips(tmp_path, cfg, schedule, data):
    state = fresh_state(cfg)
    dh.train(state, data[0], schedule, cfg, num_steps=2, progress=False)
    path = tmp_path / "run.pt"
    dh.save_checkpoint(path, state, cfg)
    assert not (tmp_path / "run.pt.tmp").exists()  # written atomically: temp file renamed away
    restored = dh.load_checkpoint(path, dh.make_unet(cfg), cfg, "cpu")
    assert restored.step == 2 and restored.history.train_loss == state.history.train_loss
    for a, b in zip(state.model.state_dict().values(), restored.model.state_dict().values()):
        torch.testing.assert_close(a, b)
    for a, b in zip(state.ema.model.state_dict().values(), restored.ema.model.state_dict().values()):
        torch.testing.assert_close(a, b)


def test_resumed_training_continues_exactly(tmp_path, cfg, schedule, data):
    """Interrupt after 2 steps, resume from the checkpoint: steps 3-4 match an uninterrupted run."""
    train_set, _ = data
    config = cfg.replace(checkpoint_every=2)
    straight = fresh_state(config)
    dh.train(straight, train_set, schedule, config, num_steps=4, progress=False)

    path = tmp_path / "run.pt"
    first = fresh_state(config)
    dh.train(first, train_set, schedule, config, num_steps=2, checkpoint_path=path, progress=False)
    del first  # "the process died"
    torch.manual_seed(123)  # a new process has other global RNG state; the checkpoint restores it
    resumed = dh.resume_or_init(path, dh.make_unet(config), config, "cpu")
    assert resumed.step == 2
    dh.train(resumed, train_set, schedule, config, num_steps=4, checkpoint_path=path, progress=False)
    assert resumed.history.train_loss == straight.history.train_loss
    for a, b in zip(straight.model.parameters(), resumed.model.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_checkpoint_from_another_config_is_refused(tmp_path, cfg, schedule):
    state = fresh_state(cfg)
    path = tmp_path / "run.pt"
    dh.save_checkpoint(path, state, cfg)
    other = cfg.replace(channels=16)
    with pytest.raises(ValueError, match=r"another configuration.*channels: checkpoint 8 vs config 16"):
        dh.load_checkpoint(path, dh.make_unet(other), other, "cpu")
    # settings that do not change the model (e.g. how long to train) may differ
    longer = cfg.replace(num_train_steps=99)
    assert dh.load_checkpoint(path, dh.make_unet(longer), longer, "cpu").step == 0


def test_corrupt_or_missing_checkpoints_are_refused(tmp_path, cfg):
    model = dh.make_unet(cfg)
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        dh.load_checkpoint(tmp_path / "missing.pt", model, cfg, "cpu")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="corrupt or not a ddpm_helpers checkpoint"):
        dh.load_checkpoint(garbage, model, cfg, "cpu")
    state = fresh_state(cfg)
    good = tmp_path / "good.pt"
    dh.save_checkpoint(good, state, cfg)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ValueError, match="corrupt"):
        dh.load_checkpoint(truncated, model, cfg, "cpu")
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(1)}, foreign)
    with pytest.raises(ValueError, match="format version None"):
        dh.load_checkpoint(foreign, model, cfg, "cpu")


def test_checkpoint_that_does_not_fit_the_model_is_refused(tmp_path, cfg):
    state = fresh_state(cfg)
    path = tmp_path / "run.pt"
    dh.save_checkpoint(path, state, cfg)
    conditional = dh.make_unet(cfg, num_classes=10)
    with pytest.raises(ValueError, match="does not fit this model"):
        dh.load_checkpoint(path, conditional, cfg, "cpu")


def test_train_refuses_images_outside_the_model_range(cfg, schedule):
    bad = dh.ImageSet(torch.rand(4, 1, 32, 32) * 255, torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"train_set.images must lie in \[-1, 1\]"):
        dh.train(fresh_state(cfg), bad, schedule, cfg, num_steps=1, progress=False)


def test_train_stops_at_a_time_budget_and_records_the_end(cfg, schedule, data):
    state = fresh_state(cfg)
    dh.train(state, data[0], schedule, cfg, num_steps=10_000, val_set=data[1], max_seconds=0.3, progress=False)
    assert 0 < state.step < 10_000 and state.elapsed >= 0.3
    assert state.history.val_steps[-1] == state.step  # the last step is evaluated
    with pytest.raises(ValueError, match="max_seconds"):
        dh.train(state, data[0], schedule, cfg, max_seconds=0, progress=False)


def test_learning_rate_cools_down_linearly_to_zero(cfg):
    config = cfg.replace(lr=1.0, warmup_steps=1, num_train_steps=10, lr_cooldown_steps=4)
    rates = [dh.training.learning_rate(s, config) for s in range(11)]
    assert rates == [1.0] * 6 + [1.0, 0.75, 0.5, 0.25, 0.0]
    with pytest.raises(ValueError, match="lr_cooldown_steps"):
        cfg.replace(num_train_steps=10, lr_cooldown_steps=11)


def test_training_uses_the_configured_memory_format(cfg):
    for channels_last in (True, False):
        state = dh.init_train_state(dh.make_unet(cfg), cfg.replace(channels_last=channels_last), "cpu")
        weight = next(p for p in state.model.parameters() if p.dim() == 4 and p.shape[1] > 1)
        assert weight.is_contiguous(memory_format=torch.channels_last) == channels_last
