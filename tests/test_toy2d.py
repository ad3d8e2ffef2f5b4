"""The 2-D playground: the mixture's closed-form posterior means against autograd and an exact identity,
and the exact velocity field carrying noise to the mixture.

Tolerances: float64 identities allow a few hundred units of roundoff (2^-53) times the numbers' size;
statistical checks allow 5 Monte Carlo standard errors.
"""

import math

import pytest
import torch

import ddpm_helpers as dh

U64 = 2.0**-53


def log_density(mixture, x, a, sigma):
    """log p(x) for x = a·x0 + sigma·eps, up to a constant: a mixture of N(a μ_k, (a² s² + sigma²) I)."""
    variance = a**2 * mixture.std**2 + sigma**2
    squared = (x[:, None, :] - a * mixture.means[None]).square().sum(-1)
    return torch.logsumexp(-squared / (2 * variance), dim=1) - math.log(variance)  # 2-D: the normaliser is 1/(2π variance)


@pytest.mark.parametrize(("a", "sigma"), [(0.99, 0.1), (0.6, 0.8), (0.05, 0.999), (0.5, 0.5)])
def test_posterior_means_give_the_score_and_add_up_to_x(a, sigma):
    mixture = dh.toy2d.eight_gaussians()
    x = (3 * torch.randn(200, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))).requires_grad_(True)
    post = mixture.posterior(x.detach(), a, sigma)
    # E[a·x0 + sigma·eps | x] = x: an identity of conditional expectations; float64 on numbers ≤ 15
    torch.testing.assert_close(a * post.x0_mean + sigma * post.eps_mean, x.detach(), rtol=0, atol=64 * U64 * 15)
    (score,) = torch.autograd.grad(log_density(mixture, x, a, sigma).sum(), x)
    # Tweedie: ∇ log p(x) = −E[eps | x]/sigma; autograd and the closed form differ by roundoff on
    # numbers of the score's size, |x − a μ|/variance ≤ (15 + 2a)/variance
    size = (15 + 2 * a) / (a**2 * mixture.std**2 + sigma**2)
    torch.testing.assert_close(score, -post.eps_mean / sigma, rtol=0, atol=256 * U64 * size)


def test_the_exact_velocity_carries_noise_to_the_mixture():
    mixture = dh.toy2d.eight_gaussians(radius=2.0, std=0.15)

    class Exact(torch.nn.Module):
        def forward(self, x, scaled_t, y=None):
            t = scaled_t / 999.0
            post = mixture.posterior(x, 1 - t, t)
            return post.eps_mean - post.x0_mean

    model = dh.VelocityNet(Exact())
    n = 2000
    x_1 = torch.randn(n, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    *_, fine = dh.iterate_flow(model, x_1, dh.FlowSamplerSpec("heun", 400))
    *_, coarse = dh.iterate_flow(model, x_1, dh.FlowSamplerSpec("heun", 200))
    # Heun's error ∝ h²: the 400-step run is ~4× closer to the exact flow than to the 200-step run, so
    # a small difference bounds its own discretisation error by about a third of it
    assert float((fine.x - coarse.x).norm(dim=1).max()) < 0.01
    nearest = (fine.x[:, None, :] - mixture.means[None]).norm(dim=-1).argmin(1)
    counts = torch.bincount(nearest, minlength=8).double()
    se = math.sqrt(n * (1 / 8) * (7 / 8))  # binomial standard error of one component's count
    assert float((counts - n / 8).abs().max()) < 5 * se, counts
    offsets = fine.x - mixture.means[nearest]
    spread = float(offsets.std())  # 2n coordinates, each N(0, s²): sd estimated to about s/√(4n)
    assert abs(spread - 0.15) < 5 * 0.15 / math.sqrt(4 * n) + 0.01 * 0.15, spread  # + 1% for the discretisation bound above


def test_the_mlp_trains_through_the_one_trainer_as_a_flow():
    mixture = dh.toy2d.eight_gaussians()
    points = mixture.sample(4096, torch.Generator().manual_seed(2))
    data = dh.ImageSet(points, torch.zeros(4096, dtype=torch.long))
    config = dh.TrainConfig(loss_weighting="uniform", batch_size=256, num_train_steps=300, lr=3e-3, warmup_steps=10, channels_last=False, eval_every=100, checkpoint_every=1000, ema_decay=0.9)
    torch.manual_seed(0)
    state = dh.init_train_state(dh.VelocityNet(dh.toy2d.ToyMLP()), config)
    history = dh.train(state, data, dh.DataSpace((2,)), None, config, diffusion=dh.FlowConfig(), progress=False)
    first, last = sum(history.train_loss[:20]) / 20, sum(history.train_loss[-20:]) / 20
    # the loss at the start is E‖eps − x0‖²/2 ≈ (2 + 4 + 2·0.15²)/2 ≈ 3; the best possible is the conditional variance, well below
    assert last < 0.75 * first, (first, last)


@pytest.mark.parametrize(("call", "message"), [
    (lambda: dh.toy2d.GaussianMixture(torch.zeros(3), 0.1), r"means must be a \(K, 2\) tensor"),
    (lambda: dh.toy2d.GaussianMixture(torch.zeros(3, 2), 0.0), "std must be"),
    (lambda: dh.toy2d.eight_gaussians().posterior(torch.zeros(3, 3), 0.5, 0.5), r"x must be a \(B, 2\) tensor"),
    (lambda: dh.toy2d.ToyMLP(time_dim=3), "time_dim must be even"),
    (lambda: dh.toy2d.ToyMLP()(torch.zeros(2, 3), torch.zeros(2)), r"x_t must be a \(B, 2\) tensor"),
])
def test_bad_inputs_name_the_argument(call, message):
    with pytest.raises(ValueError, match=message):
        call()
