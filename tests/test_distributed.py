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

    single = run(0, cfg)
    torch.testing.assert_close(torch.tensor(ranks[0]["loss"]), torch.tensor(single.history.train_loss), rtol=1e-5, atol=1e-6)
    # Summation order differs (two half-batch means vs one mean); Adam divides by √v, which
    # magnifies such rounding for near-zero gradients, so allow 1e-4 against updates of ~1e-3 per step.
    for a, b in zip(ranks[0]["params"], single.model.parameters()):
        torch.testing.assert_close(a, b.detach(), rtol=1e-3, atol=1e-4)


def test_a_single_process_is_rank_zero_of_one():
    assert world() == (0, 1)
