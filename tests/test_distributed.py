"""Data-parallel training: 2 CPU processes (gloo) must match one process on the same global batch."""

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import ddpm_helpers as dh
from ddpm_helpers.runtime import world

NUM_STEPS = 3
pytestmark = pytest.mark.slow  # two processes start, import torch and train: ~40 s on 2 cores


def run(state_seed: int, cfg: dh.Config) -> dh.TrainState:
    torch.manual_seed(state_seed)
    state = dh.init_train_state(dh.UNet(cfg.unet), cfg.train, num_steps=NUM_STEPS)
    train_set = dh.load_mnist("train", cfg, num_images=64)
    schedule = dh.make_schedule(cfg.diffusion.schedule, cfg.diffusion.T)
    dh.train(state, train_set, dh.MNIST_PIXELS, schedule, cfg.train, diffusion=cfg.diffusion, progress=False)
    return state


def worker(rank: int, world_size: int, cfg: dh.Config, out: str) -> None:
    # The processes meet through a file in the test's own temporary folder, not a TCP port: picking a
    # "free" port and binding it later races with every other process on the machine.
    dist.init_process_group("gloo", init_method=f"file://{out}/rendezvous", rank=rank, world_size=world_size)
    torch.set_num_threads(1)
    try:
        state = run(0, cfg)
        torch.save({"params": [p.detach().clone() for p in state.model.parameters()],
                    "ema": [p.detach().clone() for p in state.ema.model.parameters()],
                    "loss": state.history.train_loss}, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_processes_match_one_process_on_the_same_global_batch(tmp_path, cfg):
    cfg = cfg.replace(train=cfg.train.replace(batch_size=8))
    mp.spawn(worker, args=(2, cfg, str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    for a, b in zip(ranks[0]["params"] + ranks[0]["ema"], ranks[1]["params"] + ranks[1]["ema"]):
        torch.testing.assert_close(a, b, rtol=0, atol=0)  # the replicas stay identical
    assert ranks[0]["loss"] == ranks[1]["loss"]

    with torch.random.fork_rng():
        torch.manual_seed(0)
        initial = torch.cat([p.detach().flatten() for p in dh.UNet(cfg.unet).parameters()])  # as run() builds it
    single = run(0, cfg)
    # The first loss is the same 8·1024 float32 squares summed in two orders (two half-batch means, then
    # their mean, against one mean): torch's cascade summation keeps each within ≈ log2(8192)·u ≈ 8e-7
    # relative. Later losses also see the parameter differences below, which sit where the gradient
    # nearly vanishes and so move the loss by Σ g_i·Δθ_i ≈ 0. rtol 1e-5 is 12× the summation bound.
    torch.testing.assert_close(torch.tensor(ranks[0]["loss"]), torch.tensor(single.history.train_loss), rtol=1e-5, atol=1e-6)
    # Parameters. The two runs' gradients differ by rounding (the same summation orders), and Adam's update
    # lr·m̂/(√v̂ + ε) is scale-free: where a gradient element is far above its rounding error the updates
    # agree to that relative error, but where it nearly cancels (|g| near its rounding error) the update
    # can take any value in its range. For bias-corrected Adam with β = (0.9, 0.999) and t ≤ 3 steps,
    # |m̂/√v̂| ≤ 1.004 (Cauchy-Schwarz over the t gradients), so each run moves an element by at most
    # 1.004·lr per step (AdamW here has no weight decay; warm-up only lowers lr): the elementwise bound is
    # 2·1.004·lr·NUM_STEPS. As a whole, the difference stays a small part of the distance trained:
    # rounding changes the updates of the few ill-conditioned elements, while a wrong shard, a missing
    # all-reduce or a skipped step changes every element's update by O(lr), a ratio of order 1. The
    # threshold 0.05 lies between the two regimes (rounding alone gave 2e-4 with 44 of 48,836 elements
    # off by more than 1e-6, on an AMD EPYC).
    trained = torch.cat([p.detach().flatten() for p in ranks[0]["params"]])
    expected = torch.cat([p.detach().flatten() for p in single.model.parameters()])
    difference = (trained - expected).abs()
    assert float(difference.max()) <= 2 * 1.004 * cfg.train.lr * NUM_STEPS
    assert float(difference.norm()) <= 0.05 * float((expected - initial).norm())


def test_a_single_process_is_rank_zero_of_one():
    assert world() == (0, 1)
