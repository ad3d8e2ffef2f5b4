"""The one training loop: stop at seconds, evaluation callbacks, a complete plan, and the state's own state_dict.

Time is made deterministic here: ``time.perf_counter`` is replaced by a clock that moves one second
per network call, so a run "planned for 6 seconds" takes exactly 6 steps on every machine.
"""

import warnings

import pytest
import torch

import ddpm_helpers as dh
from ddpm_helpers import training


@pytest.fixture
def clock(monkeypatch):
    """A fake training clock: ``clock.now`` seconds, advanced by 1 at each training-mode forward call of a
    model given to ``clock.tick`` (one per step; a validation loss runs in eval mode and takes no time)."""

    class Clock:
        now = 0.0

        def tick(self, model):
            model.register_forward_pre_hook(lambda module, _: setattr(self, "now", self.now + module.training))
            return model

    fake = Clock()
    monkeypatch.setattr(training.time, "perf_counter", lambda: fake.now)
    return fake


@pytest.fixture
def data(cfg):
    return dh.load_mnist("train", cfg, num_images=64), dh.load_mnist("val", cfg)


def timed_state(cfg, clock, max_seconds=6.0):
    torch.manual_seed(0)
    return dh.init_train_state(clock.tick(dh.UNet(cfg.unet)), cfg.train, max_seconds=max_seconds)


def run(state, cfg, schedule, train_set, **options):
    return dh.train(state, train_set, dh.MNIST_PIXELS, schedule, cfg.train, diffusion=cfg.diffusion, progress=False, **options)


def same_weights(a, b):
    return all(torch.equal(x, y) for x, y in zip(a.model.state_dict().values(), b.model.state_dict().values())) and all(
        torch.equal(x, y) for x, y in zip(a.ema.model.state_dict().values(), b.ema.model.state_dict().values()))


def test_stop_at_seconds_ends_a_call_without_changing_the_plan(cfg, schedule, data, clock):
    straight = timed_state(cfg, clock)
    run(straight, cfg, schedule, data[0])
    assert straight.step == 6 and straight.elapsed == 6.0
    clock.now = 0.0
    stopped = timed_state(cfg, clock)
    run(stopped, cfg, schedule, data[0], stop_at_seconds=2.0)
    assert stopped.step == 2 and stopped.elapsed == 2.0 and stopped.max_seconds == 6.0  # the plan is unchanged
    run(stopped, cfg, schedule, data[0], stop_at_seconds=2.0)  # already there: no step
    assert stopped.step == 2
    run(stopped, cfg, schedule, data[0])  # then on to the end of the plan
    assert stopped.step == 6 and same_weights(straight, stopped)  # the same learning rates, so the same weights
    assert stopped.history.train_loss == straight.history.train_loss


@pytest.mark.slow
def test_eval_callbacks_fire_once_at_each_point_and_their_time_is_not_training_time(cfg, schedule, data, clock, tmp_path):
    seen = []

    def judge(state):
        saved = dh.read_checkpoint(tmp_path / "run.pt", state.model, cfg.diffusion, cfg.train)
        seen.append((state.step, state.elapsed, saved["step"], state.history.val_steps[-1]))
        clock.now += 100.0  # a slow evaluation: must not count as training time

    state = timed_state(cfg, clock)
    run(state, cfg, schedule, data[0], val_set=data[1], checkpoint_path=tmp_path / "run.pt", on_eval=judge,
        eval_at_steps=[2, 5], eval_at_seconds=[1.5, 3.0, 3.5, 6.0, 60.0])
    # step 2 is a step point and the first step past 1.5 s: one call there; 3.0 s is reached at step 3,
    # 3.5 s first passed at step 4; 60 s lies past the plan's end: never reached
    assert [row[0] for row in seen] == [2, 3, 4, 5, 6]
    assert [row[1] for row in seen] == [2.0, 3.0, 4.0, 5.0, 6.0]  # training time only
    assert all(step == saved == val for step, _, saved, val in seen)  # checkpoint and validation loss of that step
    assert state.step == 6 and state.elapsed == 6.0


@pytest.mark.slow
def test_callbacks_leave_the_weights_alone(cfg, schedule, data):
    torch.manual_seed(0)
    plain = dh.init_train_state(dh.UNet(cfg.unet), cfg.train, num_steps=4)
    run(plain, cfg, schedule, data[0])
    torch.manual_seed(0)
    hooked = dh.init_train_state(dh.UNet(cfg.unet), cfg.train, num_steps=4)
    calls = []
    run(hooked, cfg, schedule, data[0], val_set=data[1], on_eval=lambda s: calls.append(s.step), eval_at_steps=[1, 3])
    assert calls == [1, 3] and same_weights(plain, hooked)


def test_a_complete_time_plan_takes_no_step_and_rewrites_no_checkpoint(cfg, schedule, data, clock, tmp_path):
    """Issue 26, class 8: once the planned seconds are spent, another call (or a resumed final checkpoint)
    would run a learning-rate-0 step that still moves the step count, the losses and the EMA."""
    path = tmp_path / "run.pt"
    state = timed_state(cfg, clock, max_seconds=3.0)
    run(state, cfg, schedule, data[0], checkpoint_path=path)
    assert state.step == 3 and state.plan_complete
    before = (state.step, list(state.history.train_loss), state.ema.num_updates, path.read_bytes())
    with pytest.warns(UserWarning, match=r"plan of 3 s of training \(3.0 s done\) is complete: train\(\) took no step"):
        run(state, cfg, schedule, data[0], checkpoint_path=path)
    assert (state.step, state.history.train_loss, state.ema.num_updates, path.read_bytes()) == before
    resumed = dh.resume_or_init(path, clock.tick(dh.UNet(cfg.unet)), cfg.diffusion, cfg.train, max_seconds=3.0)
    with pytest.warns(UserWarning, match="is complete"):
        run(resumed, cfg, schedule, data[0], checkpoint_path=path)
    assert resumed.step == 3 and resumed.ema.num_updates == 3 and path.read_bytes() == before[3]


def test_a_complete_step_plan_is_a_no_op_too_and_an_unfinished_one_is_silent(cfg, schedule, data):
    state = dh.init_train_state(dh.UNet(cfg.unet), cfg.train, num_steps=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # reaching a target already reached, mid-plan, is no news
        run(state, cfg, schedule, data[0], num_steps=1)
        run(state, cfg, schedule, data[0], num_steps=1)
    run(state, cfg, schedule, data[0])
    with pytest.warns(UserWarning, match=r"plan of 2 steps \(2 done\) is complete"):
        run(state, cfg, schedule, data[0])
    assert state.step == 2 and len(state.history.train_loss) == 2


def test_the_state_round_trips_through_its_own_state_dict(cfg, schedule, data):
    torch.manual_seed(0)
    a = dh.init_train_state(dh.UNet(cfg.unet), cfg.train, num_steps=4)
    run(a, cfg, schedule, data[0], num_steps=2)
    saved = a.state_dict()
    assert set(saved) == {"step", "elapsed", "num_steps", "max_seconds", "model", "ema", "optimizer", "scaler", "generator", "history"}
    b = dh.init_train_state(dh.UNet(cfg.unet), cfg.train, num_steps=99)
    b.load_state_dict(saved)
    assert (b.step, b.num_steps, b.elapsed) == (2, 4, a.elapsed) and b.history == a.history
    run(a, cfg, schedule, data[0])
    run(b, cfg, schedule, data[0])
    assert same_weights(a, b) and a.history.train_loss == b.history.train_loss  # the rest of the run is the same


@pytest.mark.parametrize("options, match", [
    ({"eval_at_steps": [2]}, "without on_eval"),
    ({"on_eval": print, "eval_at_steps": [0]}, r"each of eval_at_steps must be an integer >= 1, got 0"),
    ({"on_eval": print, "eval_at_seconds": [float("nan")]}, r"each of eval_at_seconds must be a finite number"),
    ({"on_eval": print, "eval_at_seconds": 5.0}, "eval_at_seconds must be a list of floats, got float"),
    ({"stop_at_seconds": 0.0}, r"stop_at_seconds must be a finite number in \(0, inf\]"),
])
def test_bad_loop_options_are_refused_by_name(cfg, schedule, data, options, match):
    state = dh.init_train_state(dh.UNet(cfg.unet), cfg.train)
    with pytest.raises(ValueError, match=match):
        run(state, cfg, schedule, data[0], **options)
    assert state.step == 0


def test_the_diffusion_must_describe_the_schedule(cfg, schedule, data):
    state = dh.init_train_state(dh.UNet(cfg.unet), cfg.train)
    with pytest.raises(ValueError, match=r"schedule \('cosine', T=1000\) must be the one diffusion describes \('linear', T=1000\)"):
        dh.train(state, data[0], dh.MNIST_PIXELS, schedule, cfg.train, diffusion=cfg.diffusion.replace(schedule="linear"), progress=False)
    with pytest.raises(ValueError, match="diffusion must be a dh.DiffusionConfig .e.g. cfg.diffusion., got str"):
        dh.train_step(state, data[0].images[:4], schedule, cfg.train, diffusion="v")
    assert state.step == 0


def test_a_v_network_trains_on_the_v_target_from_the_diffusion_config(cfg, schedule, data):
    """The loss the trainer records is the loss of diffusion.prediction's target (checked on one fixed batch)."""
    torch.manual_seed(0)
    state = dh.init_train_state(dh.UNet(cfg.unet), cfg.train)
    v = cfg.diffusion.replace(prediction="v")
    assert dh.validation_loss(state.model, data[1], schedule, cfg.train, diffusion=v) != dh.validation_loss(
        state.model, data[1], schedule, cfg.train, diffusion=cfg.diffusion)
    x0 = data[1].images[: cfg.train.num_val_loss_images]
    g = torch.Generator().manual_seed(cfg.train.seed + 1)  # validation_loss's own draws
    t = torch.randint(0, schedule.T, (x0.shape[0],), generator=g)
    eps = torch.randn(x0.shape, generator=g)
    expected = dh.ddpm_loss(state.model, x0, schedule, t=t, eps=eps, prediction="v", weighting=cfg.train.loss_weighting,
                            min_snr_gamma=cfg.train.min_snr_gamma)   # weighted as the training loss is
    # the same computation in the same order: equal to the last bit
    assert dh.validation_loss(state.model, data[1], schedule, cfg.train, diffusion=v) == float(expected.detach())


@pytest.mark.slow
def test_a_checkpoint_written_before_the_prediction_moved_still_resumes(cfg, schedule, data, tmp_path):
    """Checkpoints of earlier versions named schedule, T and prediction apart; they load into the same diffusion only."""
    from ddpm_helpers.weights import read_weights, write_atomic

    torch.manual_seed(0)
    state = dh.init_train_state(dh.UNet(cfg.unet), cfg.train, num_steps=4)
    run(state, cfg, schedule, data[0], num_steps=2, checkpoint_path=tmp_path / "new.pt")
    payload = read_weights(tmp_path / "new.pt", "checkpoint")
    identity = {key: value for key, value in payload["identity"].items() if key != "diffusion"}
    old = {**identity, "schedule": cfg.diffusion.schedule, "T": 1000, "prediction": "eps"}
    write_atomic({**{k: v for k, v in payload.items() if k != "format_version"}, "identity": old}, tmp_path / "old.pt")
    resumed = dh.load_checkpoint(tmp_path / "old.pt", dh.UNet(cfg.unet), cfg.diffusion, cfg.train)
    assert resumed.step == 2 and same_weights(resumed, state)
    with pytest.raises(ValueError, match=r"diffusion.prediction: checkpoint 'eps' vs now 'v'"):
        dh.load_checkpoint(tmp_path / "old.pt", dh.UNet(cfg.unet), cfg.diffusion.replace(prediction="v"), cfg.train)
