"""ddpm_helpers: the machinery shared by the chapters of *DDPM on MNIST*.

Chapters import it as ``import ddpm_helpers as dh``. The rule for what lives where:

* **Flat under ``dh.``**: every name a chapter uses to configure, build, train, sample, load and
  show: configs, schedules, the forward process and loss, the sampling steps and loop, the
  networks and their layers, training and checkpoints, shipped weights, data, runtime and figures.
  These are listed in ``__all__``.
* **In a submodule, named by its family**: ``dh.metrics`` (scores of images and features: FID,
  KID, SSIM, PSNR, class scores), ``dh.elbo`` (the variational bound, term by term),
  ``dh.evaluation`` (judging a model by its samples against a real reference) and ``dh.latent``
  (moving between images and scaled latents), ``dh.toy2d`` (the 2-D playground: Gaussian mixtures with
  exact scores and velocities, a small MLP). A chapter writes ``dh.metrics.fid(...)``.
* Flow matching (``flow.py``: the interpolant, velocity networks, the loss; ``flow_sampling.py``:
  Euler/Heun steps and the loop) is flat like the diffusion it sits beside; so is its judge,
  ``flow_sample_quality``, the flow's counterpart of ``dh.evaluation.sample_quality``.

Anything else (a name starting with ``_``, or not listed here) is internal and may change.
"""

from . import cards, claims, diagnostics, elbo, evaluation, interactive, latent, metrics, provenance, toy2d
from .autoencoder import AttentionResBlock, Autoencoder, AutoencoderConfig, ChannelAttention, reconstruction_loss, train_autoencoder
from .checkpoint import load_checkpoint, read_checkpoint, resume_or_init, save_checkpoint
from .classifier import MNISTClassifier, classifier_card, load_classifier, train_classifier
from .config import FULL, TINY, Config, DataConfig, DiffusionConfig, TrainConfig, load_config
from .data import ImageSet, class_names, load_mnist, to_model_range, to_pixel_range
from .diffusion import MNIST_PIXELS, DataSpace, EpsFromV, Posterior, ddpm_loss, eps_from_v, loss_weights, posterior_mean_var, predict_eps, predict_x0, q_sample, v_target
from .ema import EMA
from .flow import Coupling, EpsFromVelocity, FlowConfig, Segments, VelocityNet, chord_lines, draw_flow_times, flow_coordinates, flow_interpolant, flow_loss, flow_predictions, velocity_target
from .flow_sampling import FlowSamplerSpec, FlowState, euler_step, flow_sample_quality, heun_step, iterate_flow, sample_flow, trajectory_segments
from .layers import ResBlock, SelfAttention, WSConv2d, make_downsample, timestep_embedding
from .cards import ModelCard
from .pretrained import LatentModel, Pretrained, load_latent_model, load_pretrained, pretrained_card, save_pretrained, shipped_name
from .generate import Generated, generate  # the function: dh.generate(...); the module stays importable as ddpm_helpers.generate
from .runtime import describe_device, mixed_precision_dtype, pick_device, seed_everything
from .samplers import SamplerSpec, SamplerState, guided_eps, iterate_sampler, sample, timesteps
from .schedules import NoiseSchedule, cosine_alpha_bar, cosine_betas, linear_betas, make_schedule, per_sample, schedule_from_betas
from .steps import STEPS, Step, ddim_sigma, ddim_step, ddpm_step, dpm_solver_sde_step, dpm_solver_step
from .train_state import History, TrainState, init_train_state, learning_rate, record_losses
from .train_inputs import drop_labels
from .training import train, train_step, validation_loss
from .unet import UNet, UNetConfig, count_parameters
from .viz import COLORS, DIGIT_COLORS, SCHEDULE_COLORS, image_grid, plain_log_axis, plot_losses, plot_tsne, save_gif, show_images, show_strip
from .weights import WEIGHTS_DIR

from ._version import __version__

__all__ = sorted([
    "Coupling", "EpsFromVelocity", "FlowConfig", "FlowSamplerSpec", "FlowState", "Segments", "VelocityNet", "chord_lines", "draw_flow_times", "euler_step", "flow_coordinates", "flow_interpolant", "flow_loss", "flow_predictions", "flow_sample_quality", "heun_step", "iterate_flow", "sample_flow", "trajectory_segments", "velocity_target",
    "AttentionResBlock", "Autoencoder", "AutoencoderConfig", "COLORS", "ChannelAttention", "Config", "DIGIT_COLORS", "DataConfig",
    "DataSpace", "DiffusionConfig", "EMA", "EpsFromV", "FULL", "Generated", "History", "ImageSet", "LatentModel", "MNISTClassifier", "ModelCard", "MNIST_PIXELS",
    "NoiseSchedule", "Posterior", "Pretrained", "ResBlock", "SCHEDULE_COLORS", "STEPS", "SamplerSpec", "SamplerState",
    "SelfAttention", "Step", "TINY", "TrainConfig", "TrainState", "UNet", "UNetConfig", "WEIGHTS_DIR", "WSConv2d",
    "class_names", "classifier_card", "cosine_alpha_bar", "cosine_betas", "count_parameters", "ddim_sigma", "ddim_step", "ddpm_loss",
    "ddpm_step", "describe_device", "generate", "eps_from_v", "loss_weights", "dpm_solver_sde_step", "dpm_solver_step", "drop_labels", "guided_eps", "image_grid", "init_train_state",
    "iterate_sampler", "learning_rate", "linear_betas", "load_checkpoint", "load_classifier", "load_config",
    "load_latent_model", "load_mnist", "load_pretrained", "make_downsample", "make_schedule", "mixed_precision_dtype", "per_sample", "pick_device", "plain_log_axis", "plot_losses", "plot_tsne",
    "posterior_mean_var", "predict_eps", "predict_x0", "pretrained_card", "q_sample", "read_checkpoint", "reconstruction_loss", "record_losses",
    "resume_or_init", "sample", "save_checkpoint", "save_gif", "save_pretrained", "schedule_from_betas", "shipped_name",
    "seed_everything", "show_images", "show_strip", "timestep_embedding", "timesteps", "to_model_range",
    "to_pixel_range", "train", "train_autoencoder", "train_classifier", "train_step", "v_target", "validation_loss",
])

SUBMODULES = ("cards", "claims", "diagnostics", "elbo", "evaluation", "interactive", "latent", "metrics", "provenance", "spacings", "toy2d", "training")
