"""Stable Diffusion (UNet, ε-prediction) pipelines as a Generator, with a DDIM step of
adjustable η that returns its Gaussian log-prob (DDPO's ``ddim_step_with_logprob``)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import TrajectorySampler, check_prompts
from .loading import load_pipeline
from .steps import StepOutput, ddim_step


@dataclass
class DDIMCond:
    states: torch.Tensor  # [B or 2B, T, D] prompt embeddings (conditional first)
    guidance: float
    timesteps: torch.Tensor  # [T+1] UNet timesteps; the last is the "previous" of the final step
    alphas: torch.Tensor  # [T+1] ᾱ at each timestep (final_alpha_cumprod at the end)


class StableDiffusionGenerator(TrajectorySampler):
    name = "stable-diffusion"

    def __init__(self, pipeline, eta: float = 1.0, height: int | None = None, width: int | None = None):
        from diffusers import DDIMScheduler

        if isinstance(pipeline, str) or hasattr(pipeline, "__fspath__"):
            pipeline = load_pipeline("StableDiffusionPipeline", pipeline)
        self.pipe = pipeline
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

    def condition(self, prompts, guidance: float, steps: int, negative_prompts=None) -> DDIMCond:
        prompts = check_prompts(prompts)
        pos, neg = self.pipe.encode_prompt(prompts, self.device, 1, guidance > 1.0,
                                           negative_prompt=list(negative_prompts) if negative_prompts else None)
        states = torch.cat([pos, neg]) if guidance > 1.0 else pos
        self.scheduler.set_timesteps(steps, device="cpu")
        ts = self.scheduler.timesteps
        prev = ts - self.scheduler.config.num_train_timesteps // steps
        ac = self.scheduler.alphas_cumprod
        alphas = torch.stack([ac[t] for t in ts] + [ac[prev[-1]] if prev[-1] >= 0 else self.scheduler.final_alpha_cumprod])
        return DDIMCond(states, guidance, torch.cat([ts, prev[-1:]]), alphas)

    def step(self, x_t, i, cond: DDIMCond, prev_sample=None, noise=None, stochastic=True) -> StepOutput:
        t = cond.timesteps[i].to(self.device)
        if cond.guidance > 1.0:
            e_c, e_u = self.pipe.unet(torch.cat([x_t, x_t]), t, encoder_hidden_states=cond.states).sample.chunk(2)
            eps = e_u + cond.guidance * (e_c - e_u)
        else:
            eps = self.pipe.unet(x_t, t, encoder_hidden_states=cond.states).sample
        a_t, a_prev = cond.alphas[i].to(x_t), cond.alphas[i + 1].to(x_t)
        return ddim_step(x_t, eps, a_t, a_prev, eta=self.eta if stochastic else 0.0,
                         prev_sample=prev_sample, noise=noise)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        vae = self.pipe.vae
        img = vae.decode(latents / vae.config.scaling_factor).sample
        return (img / 2 + 0.5).clamp(0, 1)
