"""Flow-matching transformer pipelines (Stable Diffusion 3 / 3.5) as a Generator, with the
Flow-GRPO SDE, DanceGRPO SDE, CPS or deterministic ODE step (``rewardlab.generators.steps``),
and FLUX.1 on the same code."""

from __future__ import annotations

import torch

from . import DEFAULT_GUIDANCE
from .base import Cond, TrajectorySampler, check_prompts, uncond_prompts
from .loading import load_pipeline
from .steps import FlowTransitions


class SD3Generator(FlowTransitions, TrajectorySampler):
    name = "sd3"
    default_guidance = DEFAULT_GUIDANCE

    def __init__(self, pipeline, step_type: str = "flow_sde", noise_level: float = 0.7, eta: float = 0.3,
                 height: int | None = None, width: int | None = None, max_sequence_length: int = 256):
        from diffusers import FlowMatchEulerDiscreteScheduler

        self.set_flow_step(step_type, noise_level, eta)  # a bad step type fails before any loading
        if isinstance(pipeline, str) or hasattr(pipeline, "__fspath__"):
            pipeline = load_pipeline(self.pipeline_class, pipeline)
        self.pipe = pipeline
        self.scheduler = FlowMatchEulerDiscreteScheduler.from_config(pipeline.scheduler.config)
        self.factor = pipeline.vae_scale_factor
        default = self.default_size()
        self.height, self.width = height or default, width or default
        self.max_sequence_length = max_sequence_length

    pipeline_class = "StableDiffusion3Pipeline"

    def default_size(self) -> int:
        return self.pipe.transformer.config.sample_size * self.factor

    @property
    def denoiser(self) -> torch.nn.Module:
        """The network LoRA adapters attach to."""
        return self.pipe.transformer

    @property
    def device(self) -> torch.device:
        return self.pipe.transformer.device

    def latent_shape(self, height=None, width=None) -> tuple[int, int, int]:
        h, w = height or self.height, width or self.width
        f = self.factor * self.pipe.transformer.config.patch_size
        if h % f or w % f:
            raise ValueError(f"height and width must be divisible by {f} (VAE factor x patch size), got {h}x{w}")
        return (self.pipe.transformer.config.in_channels, h // self.factor, w // self.factor)

    @torch.no_grad()
    def condition(self, prompts, negative_prompts=None) -> Cond:
        prompts = check_prompts(prompts)
        negs = uncond_prompts(prompts, negative_prompts)
        pe, npe, pooled, npooled = self.pipe.encode_prompt(
            prompt=prompts, prompt_2=None, prompt_3=None, device=self.device, num_images_per_prompt=1,
            do_classifier_free_guidance=True, negative_prompt=negs, max_sequence_length=self.max_sequence_length)
        return Cond(prompts, {"states": pe, "pooled": pooled}, {"states": npe, "pooled": npooled},
                    None if negative_prompts is None else negs)

    def denoise(self, x, t, cond: Cond) -> torch.Tensor:
        """Velocity ``ε - x0`` at σ = ``t`` (scalar or ``[B]``); the transformer takes 1000 σ."""
        t = (torch.as_tensor(t) * self.scheduler.config.num_train_timesteps).to(x.device).expand(len(x))
        return self.pipe.transformer(hidden_states=x, timestep=t, encoder_hidden_states=cond.pos["states"],
                                     pooled_projections=cond.pos["pooled"]).sample

    def schedule(self, steps: int, shape=None) -> torch.Tensor:
        """σ from 1 to 0 with the pipeline's shift (as its scheduler)."""
        if steps < 1:
            raise ValueError(f"steps must be at least 1, got {steps}")
        self.scheduler.set_timesteps(steps, device="cpu")
        return self.scheduler.sigmas.clone()

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """The VAE posterior's mean (deterministic), shifted and scaled as the transformer expects."""
        vae = self.pipe.vae
        x = images.to(self.device, vae.dtype) * 2 - 1
        return (vae.encode(x).latent_dist.mean - vae.config.shift_factor) * vae.config.scaling_factor

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        vae = self.pipe.vae
        img = vae.decode(latents / vae.config.scaling_factor + vae.config.shift_factor).sample
        return (img / 2 + 0.5).clamp(0, 1)


def pack(x: torch.Tensor) -> torch.Tensor:
    """FLUX's 2x2 patch packing: ``[B, C, H, W]`` → ``[B, H/2 · W/2, 4C]`` (as ``FluxPipeline._pack_latents``)."""
    b, c, h, w = x.shape
    return x.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(b, (h // 2) * (w // 2), c * 4)


def unpack(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """The inverse of ``pack`` for a latent grid of ``h x w``."""
    b, _, c4 = x.shape
    return x.view(b, h // 2, w // 2, c4 // 4, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(b, c4 // 4, h, w)


class FluxGenerator(SD3Generator):
    """FLUX.1 transformers. Latents are kept as VAE grids ``[B, C, H/8, W/8]`` (so the size
    travels with them: any per-call ``height``/``width`` works) and packed into 2x2 patches
    with rotary image ids inside ``denoise``; the σ shift depends on the resolution.

    ``guidance`` is classifier-free guidance as for every adapter (1 = off, the default here:
    FLUX.1 is guidance-distilled); ``distilled_guidance`` is the guidance value FLUX.1-dev
    takes as a network input (ignored by models without ``guidance_embeds``)."""

    name = "flux"
    default_guidance = 1.0
    pipeline_class = "FluxPipeline"

    def __init__(self, pipeline, step_type: str = "flow_sde", noise_level: float = 0.7, eta: float = 0.3,
                 height: int | None = None, width: int | None = None, max_sequence_length: int = 512,
                 distilled_guidance: float = 3.5):
        super().__init__(pipeline, step_type, noise_level, eta, height, width, max_sequence_length)
        self.distilled_guidance = distilled_guidance

    def default_size(self) -> int:
        return getattr(self.pipe, "default_sample_size", 128) * self.factor

    def latent_shape(self, height=None, width=None) -> tuple[int, int, int]:
        h, w = height or self.height, width or self.width
        f = self.factor * 2
        if h % f or w % f:
            raise ValueError(f"height and width must be divisible by {f} (VAE factor x 2x2 packing), got {h}x{w}")
        return (self.pipe.transformer.config.in_channels // 4, h // self.factor, w // self.factor)

    @torch.no_grad()
    def condition(self, prompts, negative_prompts=None) -> Cond:
        prompts = check_prompts(prompts)
        negs = uncond_prompts(prompts, negative_prompts)
        enc = lambda ps: self.pipe.encode_prompt(ps, None, device=self.device,
                                                 max_sequence_length=self.max_sequence_length)
        pe, pooled, text_ids = enc(prompts)
        npe, npooled, _ = enc(negs)
        return Cond(prompts, {"states": pe, "pooled": pooled}, {"states": npe, "pooled": npooled},
                    None if negative_prompts is None else negs, {"text_ids": text_ids})

    def denoise(self, x, t, cond: Cond) -> torch.Tensor:
        """Velocity at σ = ``t`` for latents ``[B, C, h, w]``, packed for the transformer and back."""
        b, _, h, w = x.shape
        g = None
        if self.pipe.transformer.config.guidance_embeds:
            g = torch.full((b,), float(self.distilled_guidance), device=x.device, dtype=torch.float32)
        image_ids = self.pipe._prepare_latent_image_ids(b, h // 2, w // 2, x.device, x.dtype)
        v = self.pipe.transformer(hidden_states=pack(x), timestep=torch.as_tensor(t).to(x).expand(b), guidance=g,
                                  pooled_projections=cond.pos["pooled"], encoder_hidden_states=cond.pos["states"],
                                  txt_ids=cond.shared["text_ids"], img_ids=image_ids, return_dict=False)[0]
        return unpack(v, h, w)

    def schedule(self, steps: int, shape=None) -> torch.Tensor:
        """FLUX's σ: ``linspace(1, 1/steps)`` shifted by ``mu`` of the image's token count."""
        import numpy as np
        from diffusers.pipelines.flux.pipeline_flux import calculate_shift

        if steps < 1:
            raise ValueError(f"steps must be at least 1, got {steps}")
        _, h, w = shape or self.latent_shape()
        c = self.scheduler.config
        mu = calculate_shift((h // 2) * (w // 2), c.get("base_image_seq_len", 256), c.get("max_image_seq_len", 4096),
                             c.get("base_shift", 0.5), c.get("max_shift", 1.15))
        self.scheduler.set_timesteps(sigmas=np.linspace(1.0, 1 / steps, steps), mu=mu, device="cpu")
        return self.scheduler.sigmas.clone()
