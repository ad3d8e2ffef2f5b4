import dataclasses
import hashlib
import math

import pytest
import torch

import ddpm_helpers as dh
from ddpm_helpers.weights import write_atomic


@pytest.fixture
def data(cfg):
    return dh.load_mnist("train", cfg, num_images=64), dh.load_mnist("val", cfg)


def fresh_state(cfg, seed=0, **plan):
    torch.manual_seed(seed)
    return dh.init_train_state(dh.UNet(cfg.unet), cfg.train, **plan)


def lrs_of_a_run(cfg, schedule, **plan):
    """The learning rate each step of a run used (read from the optimizer after the step)."""
    state = fresh_state(cfg, **plan)
    x0 = dh.load_mnist("val", cfg, num_images=2).images
    rates = []
    while state.step < state.num_steps:
        dh.train_step(state, x0, schedule, cfg.train, diffusion=cfg.diffusion)
        rates.append(state.optimizer.param_groups[0]["lr"])
    return rates


@pytest.mark.slow
def test_loss_falls_when_overfitting_one_batch(cfg, schedule):
    """A fixed batch and fixed (t, eps): the network must drive this loss well below its start."""
    config = cfg.replace(train=cfg.train.replace(lr=3e-3, warmup_steps=1))
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
    history = dh.train(state, train_set, dh.MNIST_PIXELS, schedule, cfg.train, diffusion=cfg.diffusion, num_steps=4, val_set=val_set, progress=False)
    assert state.step == 4 and len(history.train_loss) == 4
    assert history.val_steps == [2, 4] and len(history.val_loss) == 2
    assert all(v > 0 for v in history.val_loss) and state.elapsed > 0
    assert history.val_loss[-1] == dh.validation_loss(state.model, val_set, schedule, cfg.train, diffusion=cfg.diffusion)  # t, eps fixed by the seed


def test_ema_is_a_moving_average():
    model = torch.nn.Linear(2, 1, bias=False)
    torch.nn.init.zeros_(model.weight)
    ema = dh.EMA(model, decay=0.5)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update(model)  # warm-up decay min(0.5, 2/11) = 2/11
    torch.testing.assert_close(ema.model.weight, torch.full((1, 2), 9 / 11))  # one float32 lerp: ≤ 2 roundings, inside the defaults
    with pytest.raises(ValueError, match="decay"):
        dh.EMA(model, decay=1.0)


def test_learning_rate_warms_up(cfg):
    config = cfg.train.replace(lr=1.0, warmup_steps=4, lr_cooldown_fraction=0.0)
    assert [dh.learning_rate(s, config, progress=s / 100) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]


def test_learning_rate_cools_down_linearly_to_zero(cfg):
    config = cfg.train.replace(lr=1.0, warmup_steps=1, lr_cooldown_fraction=0.4)
    rates = [dh.learning_rate(s, config, progress=s / 10) for s in range(11)]
    # float64 arithmetic on a few numbers: errors of ~1e-16; 1e-12 only forgives that, not a wrong schedule
    assert rates == pytest.approx([1.0] * 6 + [1.0, 0.75, 0.5, 0.25, 0.0], rel=0, abs=1e-12)


def test_a_step_planned_run_uses_the_closed_form_learning_rate(cfg, schedule):
    """Step k of a run planned for N steps uses lr · min(warm-up, (1 − k/N) / lr_cooldown_fraction)."""
    N, fraction = 6, 0.5
    config = cfg.replace(train=cfg.train.replace(lr=1e-3, warmup_steps=2, lr_cooldown_fraction=fraction))
    rates = lrs_of_a_run(config, schedule, num_steps=N)
    expected = [1e-3 * min(min(1.0, (k + 1) / 2), (1 - k / N) / fraction) for k in range(N)]
    assert rates == pytest.approx(expected, rel=1e-12, abs=0)  # float64 arithmetic: ~1e-16 relative
    assert rates[-1] == pytest.approx(1e-3 / (N * fraction))  # the last step: lr / (N · fraction); float64, rel 1e-6 default


@pytest.mark.slow
def test_the_plan_not_num_train_steps_sets_the_learning_rate(cfg, schedule):
    """A run planned for N steps cools down over those N, whatever config.num_train_steps says."""
    short = cfg.replace(train=cfg.train.replace(num_train_steps=1))
    long = cfg.replace(train=cfg.train.replace(num_train_steps=10_000))
    assert lrs_of_a_run(short, schedule, num_steps=5) == lrs_of_a_run(long, schedule, num_steps=5)
    assert fresh_state(long).num_steps == 10_000  # without a plan, the config's count is the plan


def test_a_time_planned_run_cools_its_learning_rate_over_time(cfg, schedule):
    config = cfg.train.replace(lr=1.0, warmup_steps=0, lr_cooldown_fraction=0.5)
    torch.manual_seed(0)
    state = dh.init_train_state(dh.UNet(cfg.unet), config, max_seconds=100.0)
    assert state.num_steps is None and state.max_seconds == 100.0
    x0 = dh.load_mnist("val", cfg, num_images=2).images
    rates = []
    for elapsed in (0.0, 25.0, 50.0, 60.0, 75.0, 90.0):  # seconds of training spent before the step
        state.elapsed = elapsed
        assert state.progress == elapsed / 100.0
        dh.train_step(state, x0, schedule, config, diffusion=cfg.diffusion)
        rates.append(state.optimizer.param_groups[0]["lr"])
    assert rates == pytest.approx([1.0, 1.0, 1.0, 0.8, 0.5, 0.2], rel=1e-12)  # float64 arithmetic: ~1e-16 relative
    # the step count plays no part: the same share of time gives the same rate at any step
    assert dh.learning_rate(3, config, 0.75) == dh.learning_rate(3_000, config, 0.75) == 0.5


def test_train_stops_at_a_time_budget_and_records_the_end(cfg, schedule, data):
    state = fresh_state(cfg, max_seconds=0.3)
    dh.train(state, data[0], dh.MNIST_PIXELS, schedule, cfg.train, diffusion=cfg.diffusion, num_steps=10_000, val_set=data[1], progress=False)
    assert 0 < state.step < 10_000 and state.elapsed >= 0.3
    assert state.history.val_steps[-1] == state.step  # the last step is evaluated
    assert state.progress == 1.0  # the whole plan is spent (how the rate cools over it: see above)
    with pytest.raises(ValueError, match="max_seconds"):
        fresh_state(cfg, max_seconds=0)
    with pytest.raises(ValueError, match="num_steps or by max_seconds, not both"):
        fresh_state(cfg, num_steps=4, max_seconds=1.0)


def test_train_refuses_to_go_past_its_plan(cfg, schedule, data):
    state = fresh_state(cfg, num_steps=2)
    with pytest.raises(ValueError, match=r"num_steps \(3\) is past the run's plan of 2 steps"):
        dh.train(state, data[0], dh.MNIST_PIXELS, schedule, cfg.train, diffusion=cfg.diffusion, num_steps=3, progress=False)
    assert state.step == 0
    dh.train(state, data[0], dh.MNIST_PIXELS, schedule, cfg.train, diffusion=cfg.diffusion, progress=False)  # default: to the end of the plan
    assert state.step == 2


def test_checkpoint_round_trips(tmp_path, cfg, schedule, data):
    state = fresh_state(cfg)
    dh.train(state, data[0], dh.MNIST_PIXELS, schedule, cfg.train, diffusion=cfg.diffusion, num_steps=2, progress=False)
    path = tmp_path / "run.pt"
    dh.save_checkpoint(path, state, cfg.diffusion, cfg.train)
    assert not (tmp_path / "run.pt.tmp").exists()  # written atomically: temp file renamed away
    restored = dh.load_checkpoint(path, dh.UNet(cfg.unet), cfg.diffusion, cfg.train)
    assert restored.step == 2 and restored.history.train_loss == state.history.train_loss
    assert (restored.num_steps, restored.max_seconds, restored.elapsed) == (state.num_steps, state.max_seconds, state.elapsed)
    for a, b in zip(state.model.state_dict().values(), restored.model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)  # a float32 checkpoint stores every bit
    for a, b in zip(state.ema.model.state_dict().values(), restored.ema.model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert torch.equal(restored.generator.get_state(), state.generator.get_state())


@pytest.mark.slow
def test_resumed_training_continues_exactly(tmp_path, cfg, schedule, data):
    """Interrupt after 2 steps, resume from the checkpoint: steps 3-4 match an uninterrupted run."""
    train_set, _ = data
    config = cfg.train.replace(checkpoint_every=2)
    straight = fresh_state(cfg.replace(train=config))
    dh.train(straight, train_set, dh.MNIST_PIXELS, schedule, config, diffusion=cfg.diffusion, num_steps=4, progress=False)

    path = tmp_path / "run.pt"
    first = fresh_state(cfg.replace(train=config))
    dh.train(first, train_set, dh.MNIST_PIXELS, schedule, config, diffusion=cfg.diffusion, num_steps=2, checkpoint_path=path, progress=False)
    del first  # "the process died"
    torch.manual_seed(123)  # a new process has other global RNG state; training draws only from the restored generator
    resumed = dh.resume_or_init(path, dh.UNet(cfg.unet), cfg.diffusion, config)
    assert resumed.step == 2
    dh.train(resumed, train_set, dh.MNIST_PIXELS, schedule, config, diffusion=cfg.diffusion, num_steps=4, checkpoint_path=path, progress=False)
    assert resumed.history.train_loss == straight.history.train_loss
    for a, b in zip(straight.model.parameters(), resumed.model.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_resume_or_init_starts_a_planned_run_and_refuses_a_directory(tmp_path, cfg, schedule):
    fresh = dh.resume_or_init(tmp_path / "none.pt", dh.UNet(cfg.unet), cfg.diffusion, cfg.train, num_steps=7)
    assert fresh.step == 0 and fresh.num_steps == 7
    timed = dh.resume_or_init(tmp_path / "none.pt", dh.UNet(cfg.unet), cfg.diffusion, cfg.train, max_seconds=5.0)
    assert timed.num_steps is None and timed.max_seconds == 5.0
    with pytest.raises(ValueError, match="path must name a checkpoint file, got the directory"):
        dh.resume_or_init(tmp_path, dh.UNet(cfg.unet), cfg.diffusion, cfg.train)


@pytest.mark.slow
def test_loading_a_checkpoint_leaves_the_global_rng_alone(tmp_path, cfg, schedule, data):
    state = fresh_state(cfg)
    dh.train(state, data[0], dh.MNIST_PIXELS, schedule, cfg.train, diffusion=cfg.diffusion, num_steps=2, progress=False)
    path = tmp_path / "run.pt"
    dh.save_checkpoint(path, state, cfg.diffusion, cfg.train)
    model = dh.UNet(cfg.unet)
    torch.manual_seed(1234)
    before = torch.get_rng_state()
    dh.load_checkpoint(path, model, cfg.diffusion, cfg.train)
    dh.resume_or_init(path, model, cfg.diffusion, cfg.train)
    assert torch.equal(torch.get_rng_state(), before)


@pytest.mark.slow
def test_checkpoint_from_another_network_schedule_or_loss_is_refused(tmp_path, cfg, schedule):
    state = fresh_state(cfg)
    path = tmp_path / "run.pt"
    dh.save_checkpoint(path, state, cfg.diffusion, cfg.train)
    wider = dh.UNet(cfg.unet.replace(channels=16))
    with pytest.raises(ValueError, match=r"another network, diffusion or loss: network: checkpoint \{.*'channels': 8.*vs now \{.*'channels': 16"):
        dh.load_checkpoint(path, wider, cfg.diffusion, cfg.train)
    model = dh.UNet(cfg.unet)
    with pytest.raises(ValueError, match=r"diffusion.schedule: checkpoint 'cosine' vs now 'linear'"):
        dh.load_checkpoint(path, model, cfg.diffusion.replace(schedule="linear"), cfg.train)
    with pytest.raises(ValueError, match=r"diffusion.T: checkpoint 1000 vs now 100"):
        dh.load_checkpoint(path, model, cfg.diffusion.replace(T=100), cfg.train)
    with pytest.raises(ValueError, match=r"diffusion.prediction: checkpoint 'eps' vs now 'v'"):  # a v-network is not an eps-network
        dh.load_checkpoint(path, model, cfg.diffusion.replace(prediction="v"), cfg.train)
    with pytest.raises(ValueError, match="diffusion must be a dh.DiffusionConfig"):  # the tables are not the description
        dh.load_checkpoint(path, model, schedule, cfg.train)
    with pytest.raises(ValueError, match=r"loss_type: checkpoint 'l2' vs now 'l1'"):
        dh.load_checkpoint(path, model, cfg.diffusion, cfg.train.replace(loss_type="l1"))
    # settings that do not change the model (e.g. how long to train) may differ
    longer = cfg.train.replace(num_train_steps=99)
    assert dh.load_checkpoint(path, model, cfg.diffusion, longer).step == 0


def test_corrupt_or_missing_checkpoints_are_refused(tmp_path, cfg, schedule):
    model = dh.UNet(cfg.unet)
    with pytest.raises(FileNotFoundError, match="checkpoint: no file at"):
        dh.load_checkpoint(tmp_path / "missing.pt", model, cfg.diffusion, cfg.train)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="corrupt or not a ddpm_helpers file"):
        dh.load_checkpoint(garbage, model, cfg.diffusion, cfg.train)
    state = fresh_state(cfg)
    good = tmp_path / "good.pt"
    dh.save_checkpoint(good, state, cfg.diffusion, cfg.train)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ValueError, match="corrupt"):
        dh.load_checkpoint(truncated, model, cfg.diffusion, cfg.train)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(1)}, foreign)
    with pytest.raises(ValueError, match="format version None"):
        dh.load_checkpoint(foreign, model, cfg.diffusion, cfg.train)


def test_checkpoint_of_an_unconditional_model_is_refused_by_a_conditional_one(tmp_path, cfg, schedule):
    state = fresh_state(cfg)
    path = tmp_path / "run.pt"
    dh.save_checkpoint(path, state, cfg.diffusion, cfg.train)
    conditional = dh.UNet(cfg.unet.replace(num_classes=10))
    with pytest.raises(ValueError, match=r"another network.*'num_classes': None.*vs now \{.*'num_classes': 10"):
        dh.load_checkpoint(path, conditional, cfg.diffusion, cfg.train)


def test_an_atomic_write_returns_its_checksum_and_never_leaves_a_partial_file(tmp_path):
    path = tmp_path / "run.pt"
    digest = write_atomic({"x": torch.arange(3)}, path)
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest()
    good = path.read_bytes()
    with pytest.raises(Exception):
        write_atomic({"x": lambda: None}, path)  # cannot be pickled: the write fails midway
    assert not (tmp_path / "run.pt.tmp").exists()  # the temporary file is removed
    assert path.read_bytes() == good  # and the old file is untouched
    with pytest.raises(Exception):
        write_atomic({"x": lambda: None}, tmp_path / "new.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.pt"]


def test_train_refuses_images_outside_the_model_range(cfg, schedule):
    bad = dh.ImageSet(torch.rand(4, 1, 32, 32) * 255, torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"train_set.images must lie in \[-1, 1\]"):
        dh.train(fresh_state(cfg), bad, dh.MNIST_PIXELS, schedule, cfg.train, diffusion=cfg.diffusion, num_steps=1, progress=False)
    wrong_shape = dh.ImageSet(torch.zeros(4, 1, 28, 28), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"train_set.images must have shape \(N, 1, 32, 32\)"):
        dh.train(fresh_state(cfg), wrong_shape, dh.MNIST_PIXELS, schedule, cfg.train, diffusion=cfg.diffusion, num_steps=1, progress=False)


def test_training_uses_the_configured_memory_format(cfg):
    for channels_last in (True, False):
        state = dh.init_train_state(dh.UNet(cfg.unet), cfg.train.replace(channels_last=channels_last))
        weight = next(p for p in state.model.parameters() if p.dim() == 4 and p.shape[1] > 1)
        assert weight.is_contiguous(memory_format=torch.channels_last) == channels_last
        assert state.device == torch.device("cpu")  # the model's own device


@pytest.mark.parametrize(
    "images,match",
    [
        (torch.full((4, 1, 32, 32), float("nan")), "must be finite, got 4,096 NaN or infinite"),
        (torch.cat([torch.zeros(1, 1, 32, 32), torch.full((1, 1, 32, 32), float("inf"))]), "must be finite"),
        (torch.rand(4, 1, 32, 32), r"no negative value at all .* dh.to_model_range"),  # [0, 1] images where [-1, 1] is expected
    ],
)
def test_train_refuses_non_finite_data_and_zero_one_images(cfg, schedule, images, match):
    with pytest.raises(ValueError, match=match):
        dh.train(fresh_state(cfg), dh.ImageSet(images, torch.zeros(len(images), dtype=torch.long)), dh.MNIST_PIXELS, schedule, cfg.train, diffusion=cfg.diffusion, num_steps=1, progress=False)


@pytest.mark.slow
def test_training_stops_at_a_non_finite_loss_and_keeps_the_last_good_checkpoint(cfg, schedule, tmp_path):
    train_set = dh.load_mnist("train", cfg, num_images=64)
    state = fresh_state(cfg)
    path = tmp_path / "run.pt"
    dh.train(state, train_set, dh.MNIST_PIXELS, schedule, cfg.train, diffusion=cfg.diffusion, num_steps=2, checkpoint_path=path, progress=False)
    good = dh.read_checkpoint(path, state.model, cfg.diffusion, cfg.train)["step"]
    with torch.no_grad():
        next(state.model.parameters()).fill_(float("nan"))   # the weights break between two checkpoints
    with pytest.raises(FloatingPointError, match=r"non-finite \(nan\) at step 3; training stopped and the checkpoint at .* holds the last good state"):
        dh.train(state, train_set, dh.MNIST_PIXELS, schedule, cfg.train, diffusion=cfg.diffusion, num_steps=4, checkpoint_path=path, progress=False)
    assert dh.read_checkpoint(path, state.model, cfg.diffusion, cfg.train)["step"] == good == 2


@pytest.mark.parametrize("capability,expected", [((6, 1), torch.float16), ((7, 5), torch.float16), ((8, 0), torch.bfloat16), ((9, 0), torch.bfloat16)])
def test_mixed_precision_uses_bf16_only_where_it_is_native(monkeypatch, capability, expected):
    """A T4 (7.5) answers is_bf16_supported() with True through emulation; the trainer must pick fp16 there."""
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    assert dh.mixed_precision_dtype("cuda") == expected
    assert dh.mixed_precision_dtype("cpu") is None


@pytest.mark.parametrize("y, phrase", [
    (torch.tensor([0, 11]), "label"),          # beyond the null class: failed inside torch's embedding
    (torch.tensor([0, 10]), "null class"),     # the null class itself: trained silently as an unconditional batch
    (torch.tensor([-1, 3]), "label"),
    (torch.tensor([1, 2, 3]), "y"),            # one label too many for the batch
])
def test_train_step_called_by_hand_checks_its_labels(cfg, schedule, y, phrase):
    model = dh.UNet(cfg.unet.replace(num_classes=10))
    state = dh.init_train_state(model, cfg.train)
    x0 = torch.rand(2, 1, 32, 32) * 2 - 1
    with pytest.raises(ValueError, match=phrase):
        dh.train_step(state, x0, schedule, cfg.train, y, diffusion=cfg.diffusion)
    assert state.step == 0 and not state.in_step  # refused before anything moved


def test_uniform_timesteps_are_the_plain_randint_draw(cfg):
    # the default must not change the random stream: every stored run and golden value drew t this way
    config = dataclasses.replace(cfg.train, timestep_sampling="uniform")
    drawn = dh.training.draw_timesteps(512, 1000, config, torch.Generator().manual_seed(3))
    assert torch.equal(drawn, torch.randint(0, 1000, (512,), generator=torch.Generator().manual_seed(3)))


@pytest.mark.parametrize("mean, std", [(0.0, 1.0), (-0.8, 1.6)])
def test_logit_normal_timesteps_follow_their_distribution(cfg, mean, std):
    # P(t <= k) = Phi((logit((k + 1)/T) - m)/s). The empirical CDF of n independent draws is within
    # eps of the true one everywhere with probability >= 1 - 2 exp(-2 n eps^2) (Dvoretzky-Kiefer-Wolfowitz):
    # eps = sqrt(ln(2/1e-9)/(2n)) makes a false failure a one-in-a-billion event (0.0080 at n = 200,000).
    n, T = 200_000, 1000
    config = dataclasses.replace(cfg.train, timestep_sampling="logit_normal", timestep_logit_mean=mean, timestep_logit_std=std)
    drawn = dh.training.draw_timesteps(n, T, config, torch.Generator().manual_seed(0))
    assert drawn.dtype == torch.int64 and int(drawn.min()) >= 0 and int(drawn.max()) <= T - 1
    k = torch.arange(T, dtype=torch.float64)
    u = ((k + 1) / T).clamp(max=1 - 1e-12)
    exact = torch.distributions.Normal(0.0, 1.0).cdf((torch.logit(u) - mean) / std)
    exact[-1] = 1.0
    empirical = torch.bincount(drawn, minlength=T).cumsum(0).double() / n
    eps = math.sqrt(math.log(2 / 1e-9) / (2 * n))
    assert float((empirical - exact).abs().max()) < eps

