"""Class-conditional training (label dropout) and classifier-free guidance."""

import pytest
import torch

import ddpm_helpers as dh


class AffineModel(torch.nn.Module):
    """ε = 0.5·x_t + y/10, so the conditional and null predictions differ by a known amount."""

    num_classes = 10

    def __init__(self):
        super().__init__()
        self.batch_sizes = []

    def forward(self, x_t, t, y=None):
        self.batch_sizes.append(x_t.shape[0])
        labels = torch.full_like(t, self.num_classes) if y is None else y
        return 0.5 * x_t + labels.view(-1, 1, 1, 1).float() / 10


def test_drop_labels_replaces_the_right_share_by_the_null_class():
    y = torch.arange(10).repeat(10_000)
    assert torch.equal(dh.drop_labels(y, 10, 0.0), y)
    assert torch.equal(dh.drop_labels(y, 10, 1.0), torch.full_like(y, 10))
    dropped = dh.drop_labels(y, 10, 0.1, torch.Generator().manual_seed(0))
    changed = dropped != y
    assert torch.equal(dropped[changed], torch.full_like(dropped[changed], 10))  # only to the null class
    share = changed.float().mean().item()
    assert abs(share - 0.1) < 4 * (0.1 * 0.9 / y.numel()) ** 0.5  # binomial: within 4 standard errors
    again = dh.drop_labels(y, 10, 0.1, torch.Generator().manual_seed(0))
    assert torch.equal(dropped, again)
    with pytest.raises(ValueError, match="p must lie in"):
        dh.drop_labels(y, 10, 1.5)
    with pytest.raises(ValueError, match="int64"):
        dh.drop_labels(y.float(), 10, 0.1)


@pytest.mark.parametrize("scale", [0.0, 1.0, 3.0])
def test_guided_eps_is_the_classifier_free_mix(scale):
    model, x, t = AffineModel(), torch.randn(4, 1, 8, 8), torch.full((4,), 10)
    y = torch.tensor([0, 3, 7, 9])
    eps = dh.guided_eps(model, x, t, y, scale)
    eps_y, eps_null = 0.5 * x + y.view(-1, 1, 1, 1) / 10, 0.5 * x + 1.0
    # the package may mix in another order ((1 − s)·null + s·y, or a lerp): ≤ 4 roundings of terms of size
    # ≤ |s|·|eps_y − eps_null| + |eps| ≲ 6, i.e. ≤ 4·u·6 ≈ 1.4e-6, inside the float32 defaults (atol 1e-5)
    torch.testing.assert_close(eps, eps_null + scale * (eps_y - eps_null))
    assert model.batch_sizes == ([8] if 0 < scale != 1 else [4])  # one call; a doubled batch only when mixing


def test_sampling_with_guidance_passes_labels_and_scale_through(schedule):
    model, y = AffineModel(), torch.tensor([1, 2, 3])
    spec = dh.SamplerSpec("ddim", num_steps=3)
    run = lambda scale: dh.sample(model, 3, dh.MNIST_PIXELS, schedule, spec, y=y, guidance_scale=scale, generator=torch.Generator().manual_seed(0))  # noqa: E731
    unguided, guided = run(1.0), run(2.0)
    assert not torch.allclose(unguided, guided)
    assert model.batch_sizes == [3] * 3 + [6] * 3
    with pytest.raises(ValueError, match="needs class labels y"):
        dh.sample(model, 3, dh.MNIST_PIXELS, schedule, spec, guidance_scale=2.0)
    with pytest.raises(ValueError, match="one label per sample"):
        dh.sample(model, 3, dh.MNIST_PIXELS, schedule, spec, y=torch.tensor([1, 2]))
    with pytest.raises(ValueError, match=r"guidance_scale must be a finite number in \[0, inf\]"):
        dh.sample(model, 3, dh.MNIST_PIXELS, schedule, spec, y=y, guidance_scale=-1.0)


def conditional_state(cfg, train_config=None):
    torch.manual_seed(0)
    return dh.init_train_state(dh.UNet(cfg.unet.replace(num_classes=10)), train_config or cfg.train)


@pytest.mark.slow
@pytest.mark.parametrize("label_dropout", [0.0, 0.999])
def test_label_dropout_decides_which_class_embeddings_learn(cfg, schedule, label_dropout):
    """The null row of the class embedding is trained only through dropped labels, the digit rows only through kept ones."""
    config = cfg.train.replace(label_dropout=label_dropout)
    state = conditional_state(cfg, config)
    before = state.model.class_emb.weight.detach().clone()
    x0 = dh.load_mnist("train", cfg, num_images=16)
    for _ in range(2):
        dh.train_step(state, x0.images, schedule, config, x0.labels, diffusion=cfg.diffusion)
    moved = (state.model.class_emb.weight.detach() != before).any(dim=1)
    if label_dropout == 0.0:
        assert not moved[10] and moved[x0.labels.unique()].all()
    else:  # with p = 0.999 all 32 labels are dropped unless a 1-in-1000 event happens (seeded: it does not)
        assert moved[10] and not moved[:10].any()


def test_train_feeds_labels_to_a_conditional_model_and_refuses_them_for_an_unconditional_one(cfg, schedule):
    train_set, val_set = dh.load_mnist("train", cfg, num_images=64), dh.load_mnist("val", cfg)
    state = conditional_state(cfg)
    history = dh.train(state, train_set, dh.MNIST_PIXELS, schedule, cfg.train, diffusion=cfg.diffusion, num_steps=2, val_set=val_set, progress=False)
    assert state.step == 2 and len(history.val_loss) == 1 and history.val_loss[0] > 0
    unconditional = dh.init_train_state(dh.UNet(cfg.unet), cfg.train)
    with pytest.raises(ValueError, match="model is unconditional"):
        dh.train_step(unconditional, train_set.images[:4], schedule, cfg.train, train_set.labels[:4], diffusion=cfg.diffusion)
