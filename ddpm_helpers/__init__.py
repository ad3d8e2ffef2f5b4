"""ddpm_helpers: the machinery shared by the chapters of *DDPM on MNIST*.

Chapters import it as ``import ddpm_helpers as dh``; every public name is reachable from here.
"""

from . import elbo, evaluation, metrics
from .checkpoint import load_checkpoint, read_checkpoint, resume_or_init, save_checkpoint
from .classifier import MNISTClassifier, classifier_card, load_classifier, train_classifier
from .config import FULL, TINY, Config, load_config, pick_device, seed_everything
from .data import ImageSet, load_mnist, to_model_range, to_pixel_range
from .diffusion import Posterior, ddpm_loss, posterior_mean_var, predict_eps, predict_x0, q_sample
from .pretrained import load_pretrained, pretrained_card, save_pretrained
from .samplers import SamplerState, Step, ddim_step, ddpm_step, dpm_solver_step, guided_eps, iterate_sampler, sample, timesteps
from .schedules import NoiseSchedule, cosine_alpha_bar, cosine_betas, linear_betas, make_schedule, schedule_from_betas
from .training import EMA, History, TrainState, drop_labels, init_train_state, train, train_step, validation_loss
from .unet import ResBlock, SelfAttention, UNet, count_parameters, make_unet, timestep_embedding
from .viz import COLORS, SCHEDULE_COLORS, image_grid, plot_losses, save_gif, show_images, show_strip

__version__ = "0.1.0"

__all__ = [
    "COLORS", "Config", "elbo", "evaluation", "load_pretrained", "pretrained_card", "save_pretrained", "MNISTClassifier", "classifier_card", "load_classifier", "metrics", "train_classifier", "EMA", "FULL", "History", "ImageSet", "NoiseSchedule", "Posterior", "ResBlock",
    "SCHEDULE_COLORS", "SamplerState", "SelfAttention", "Step", "TINY", "TrainState", "UNet",
    "count_parameters", "cosine_alpha_bar", "cosine_betas", "ddim_step", "ddpm_loss", "ddpm_step", "dpm_solver_step", "drop_labels", "guided_eps",
    "image_grid", "init_train_state", "iterate_sampler", "linear_betas", "load_checkpoint", "load_config",
    "load_mnist", "make_schedule", "make_unet", "pick_device", "plot_losses", "posterior_mean_var",
    "predict_eps", "predict_x0", "q_sample", "read_checkpoint", "resume_or_init", "sample", "save_checkpoint",
    "save_gif", "schedule_from_betas", "seed_everything", "show_images", "show_strip", "timestep_embedding",
    "timesteps", "to_model_range", "to_pixel_range", "train", "train_step", "validation_loss",
]
