"""Stable Diffusion (UNet, ε-prediction) pipelines as a Generator, with a DDIM step of
adjustable η that returns its Gaussian log-prob (DDPO's ``ddim_step_with_logprob``)."""

from __future__ import annotations

import torch

from . import DEFAULT_GUIDANCE
from .base import Cond, TrajectorySampler, check_prompts, uncond_prompts
from .loading import load_pipeline
from .steps import StepOutput, broadcast_level, ddim_step


class StableDiffusionGenerator(TrajectorySampler):
    name = "stable-diffusion"
    default_guidance = DEFAULT_GUIDANCE

    def __init__(self, pipeline, eta: float = 1.0, height: int | None = None, width: int | None = None):
        from diffusers import DDIMScheduler

        if isinstance(pipeline, str) or hasattr(pipeline, "__fspath__"):
            pipeline = load_pipeline("StableDiffusionPipeline", pipeline)
        self.pipe = pipeline
        # diffusers' speed tip: NHWC convolutions (benchmarks/peer_trl_ddpo.py's epochs ~6% shorter on 1 CPU thread)
        pipeline.unet.to(memory_format=torch.channels_last)
        self.scheduler = DDIMScheduler.from_config(pipeline.scheduler.config)
        self.eta = eta
        self.factor = pipeline.vae_scale_factor
        default = pipeline.unet.config.sample_size * self.factor
        self.height, self.width = height or default, width or default

    @property
    def denoiser(self) -> torch.nn.Module:
        """The network LoRA adapters attach to."""
        return self.pipe.unet

    @property
    def device(self) -> torch.device:
        return self.pipe.unet.device

    def latent_shape(self, height=None, width=None) -> tuple[int, int, int]:
        h, w = height or self.height, width or self.width
        if h % self.factor or w % self.factor:
            raise ValueError(f"height and width must be divisible by the VAE factor {self.factor}, got {h}x{w}")
        return (self.pipe.unet.config.in_channels, h // self.factor, w // self.factor)

    @torch.no_grad()
    def condition(self, prompts, negative_prompts=None) -> Cond:
        prompts = check_prompts(prompts)
        negs = uncond_prompts(prompts, negative_prompts)
        pos, neg = self.pipe.encode_prompt(prompts, self.device, 1, True, negative_prompt=negs)
        return Cond(prompts, {"states": pos}, {"states": neg}, None if negative_prompts is None else negs)

    def denoise(self, x, t, cond: Cond) -> torch.Tensor:
        """The UNet's ε at DDPM timestep ``t`` (scalar or ``[B]``)."""
        return self.pipe.unet(x, torch.as_tensor(t, device=x.device), encoder_hidden_states=cond.pos["states"]).sample

    def schedule(self, steps: int, shape=None) -> torch.Tensor:
        """DDIM's timesteps plus the "previous" timestep of the final step (negative: ᾱ = final)."""
        if steps < 1:
            raise ValueError(f"steps must be at least 1, got {steps}")
        self.scheduler.set_timesteps(steps, device="cpu")
        ts = self.scheduler.timesteps
        return torch.cat([ts, ts[-1:] - self.scheduler.config.num_train_timesteps // steps])

    def alpha_bar(self, t) -> torch.Tensor:
        """ᾱ_t, with DDIM's ``final_alpha_cumprod`` for a timestep below 0."""
        t = torch.as_tensor(t).cpu()
        ac = self.scheduler.alphas_cumprod
        return torch.where(t >= 0, ac[t.clamp(min=0)], torch.as_tensor(self.scheduler.final_alpha_cumprod))

    def transition(self, x, eps, i, timesteps, prev_sample=None, noise=None, stochastic=True) -> StepOutput:
        a_t, a_prev = self.alpha_bar(timesteps[i]).to(x), self.alpha_bar(timesteps[i + 1]).to(x)
        return ddim_step(x, eps, a_t, a_prev, eta=self.eta if stochastic else 0.0,
                         prev_sample=prev_sample, noise=noise)

    def add_noise(self, x0, noise, t) -> torch.Tensor:
        """DDPM's forward process ``sqrt(ᾱ_t) x0 + sqrt(1 - ᾱ_t) ε`` (Ho et al. 2020, eq. 4)."""
        a = broadcast_level(self.alpha_bar(t), x0)
        return a.sqrt() * x0 + (1 - a).sqrt() * noise

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """The VAE posterior's mean (deterministic), scaled as the UNet expects."""
        vae = self.pipe.vae
        x = images.to(self.device, vae.dtype) * 2 - 1
        return vae.encode(x).latent_dist.mean * vae.config.scaling_factor

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        vae = self.pipe.vae
        img = vae.decode(latents / vae.config.scaling_factor).sample
        return (img / 2 + 0.5).clamp(0, 1)
