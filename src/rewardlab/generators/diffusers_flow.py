"""Flow-matching transformer pipelines (Stable Diffusion 3 / 3.5) as a Generator, with the
Flow-GRPO SDE, DanceGRPO SDE, CPS or deterministic ODE step (``rewardlab.generators.steps``)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import TrajectorySampler, check_prompts
from .loading import load_pipeline
from .steps import FLOW_STEPS, StepOutput, flow_step, ode_step


@dataclass
class SD3Cond:
    states: torch.Tensor  # [B or 2B, T, D] joint text embeddings (conditional first)
    pooled: torch.Tensor  # [B or 2B, P] pooled CLIP embeddings
    guidance: float
    timesteps: torch.Tensor  # [T+1] noise levels σ (shifted, as the pipeline's scheduler), last 0


class SD3Generator(TrajectorySampler):
    name = "sd3"

    def __init__(self, pipeline, step_type: str = "flow_sde", noise_level: float = 0.7, eta: float = 0.3,
                 height: int | None = None, width: int | None = None, max_sequence_length: int = 256):
        from diffusers import FlowMatchEulerDiscreteScheduler

        if step_type not in FLOW_STEPS:
            raise ValueError(f"unknown step type {step_type!r}; expected one of {', '.join(FLOW_STEPS)}")
        if isinstance(pipeline, str) or hasattr(pipeline, "__fspath__"):
            pipeline = load_pipeline("StableDiffusion3Pipeline", pipeline)
        self.pipe = pipeline
        self.scheduler = FlowMatchEulerDiscreteScheduler.from_config(pipeline.scheduler.config)
        self.step_type, self.noise_level, self.eta = step_type, noise_level, eta
        self.factor = pipeline.vae_scale_factor
        sample = pipeline.transformer.config.get("sample_size")
        default = sample * self.factor if sample else None
        self.height, self.width = height or default, width or default
        self.max_sequence_length = max_sequence_length

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

    def condition(self, prompts, guidance: float, steps: int, negative_prompts=None) -> SD3Cond:
        prompts = check_prompts(prompts)
        cfg = guidance > 1.0
        pe, npe, pooled, npooled = self.pipe.encode_prompt(
            prompt=prompts, prompt_2=None, prompt_3=None, device=self.device, num_images_per_prompt=1,
            do_classifier_free_guidance=cfg, negative_prompt=list(negative_prompts) if negative_prompts else None,
            max_sequence_length=self.max_sequence_length)
        self.scheduler.set_timesteps(steps, device="cpu")
        states = torch.cat([pe, npe]) if cfg else pe
        pooled = torch.cat([pooled, npooled]) if cfg else pooled
        return SD3Cond(states, pooled, guidance, self.scheduler.sigmas.clone())

    def velocity(self, x: torch.Tensor, sigma: torch.Tensor, cond: SD3Cond) -> torch.Tensor:
        n = len(cond.states)
        xin = torch.cat([x] * (n // len(x)))
        t = (sigma * self.scheduler.config.num_train_timesteps).to(x.device).expand(n)
        v = self.pipe.transformer(hidden_states=xin, timestep=t, encoder_hidden_states=cond.states,
                                  pooled_projections=cond.pooled).sample
        if cond.guidance > 1.0:
            v_c, v_u = v.chunk(2)
            v = v_u + cond.guidance * (v_c - v_u)
        return v

    def step(self, x_t, i, cond: SD3Cond, prev_sample=None, noise=None, stochastic=True) -> StepOutput:
        sigma, sigma_prev = cond.timesteps[i], cond.timesteps[i + 1]
        v = self.velocity(x_t, sigma, cond)
        if not stochastic:
            return ode_step(x_t, v, sigma, sigma_prev)
        return flow_step(self.step_type, x_t, v, sigma, sigma_prev, noise_level=self.noise_level,
                         eta=self.eta, prev_sample=prev_sample, noise=noise)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        vae = self.pipe.vae
        img = vae.decode(latents / vae.config.scaling_factor + vae.config.shift_factor).sample
        return (img / 2 + 0.5).clamp(0, 1)


@dataclass
class FluxCond:
    states: torch.Tensor  # [B or 2B, T, D] T5 embeddings (conditional first, then negative)
    pooled: torch.Tensor  # [B or 2B, P] pooled CLIP embeddings
    text_ids: torch.Tensor
    image_ids: torch.Tensor
    guidance: float  # FLUX.1-dev's distilled guidance (embedded), ignored without guidance_embeds
    true_cfg: float  # classifier-free guidance against negative prompts (1 = off)
    timesteps: torch.Tensor  # [T+1] σ with FLUX's resolution-dependent shift, last 0


class FluxGenerator(SD3Generator):
    """FLUX.1 transformers: packed 2×2 latent patches, rotary image/text ids, the
    resolution-dependent σ shift, and distilled guidance. Negative prompts turn on
    true CFG with scale ``true_cfg``."""

    name = "flux"

    def __init__(self, pipeline, step_type: str = "flow_sde", noise_level: float = 0.7, eta: float = 0.3,
                 height: int | None = None, width: int | None = None, max_sequence_length: int = 512,
                 true_cfg: float = 1.0):
        if isinstance(pipeline, str) or hasattr(pipeline, "__fspath__"):
            pipeline = load_pipeline("FluxPipeline", pipeline)
        if height is None or width is None:
            raise ValueError("FLUX needs an explicit height and width")
        super().__init__(pipeline, step_type, noise_level, eta, height, width, max_sequence_length)
        self.true_cfg = true_cfg

    def _grid(self, height=None, width=None) -> tuple[int, int]:
        h, w = height or self.height, width or self.width
        f = self.factor * 2
        if h % f or w % f:
            raise ValueError(f"height and width must be divisible by {f} (VAE factor x 2x2 packing), got {h}x{w}")
        return h // f, w // f

    def latent_shape(self, height=None, width=None) -> tuple[int, int]:
        gh, gw = self._grid(height, width)
        return (gh * gw, self.pipe.transformer.config.in_channels)

    def condition(self, prompts, guidance: float, steps: int, negative_prompts=None) -> FluxCond:
        import numpy as np
        from diffusers.pipelines.flux.pipeline_flux import calculate_shift

        prompts = check_prompts(prompts)
        pe, pooled, text_ids = self.pipe.encode_prompt(prompts, None, device=self.device,
                                                       max_sequence_length=self.max_sequence_length)
        true_cfg = self.true_cfg if negative_prompts else 1.0
        if true_cfg > 1.0:
            npe, npooled, _ = self.pipe.encode_prompt(list(negative_prompts), None, device=self.device,
                                                      max_sequence_length=self.max_sequence_length)
            pe, pooled = torch.cat([pe, npe]), torch.cat([pooled, npooled])
        gh, gw = self._grid()
        image_ids = self.pipe._prepare_latent_image_ids(1, gh, gw, self.device, pe.dtype)
        c = self.scheduler.config
        mu = calculate_shift(gh * gw, c.get("base_image_seq_len", 256), c.get("max_image_seq_len", 4096),
                             c.get("base_shift", 0.5), c.get("max_shift", 1.15))
        self.scheduler.set_timesteps(sigmas=np.linspace(1.0, 1 / steps, steps), mu=mu, device="cpu")
        return FluxCond(pe, pooled, text_ids, image_ids, guidance, true_cfg, self.scheduler.sigmas.clone())

    def velocity(self, x: torch.Tensor, sigma: torch.Tensor, cond: FluxCond) -> torch.Tensor:
        n = len(cond.states)
        xin = torch.cat([x] * (n // len(x)))
        g = None
        if self.pipe.transformer.config.guidance_embeds:
            g = torch.full((n,), cond.guidance, device=x.device, dtype=torch.float32)
        v = self.pipe.transformer(hidden_states=xin, timestep=sigma.to(x).expand(n), guidance=g,
                                  pooled_projections=cond.pooled, encoder_hidden_states=cond.states,
                                  txt_ids=cond.text_ids, img_ids=cond.image_ids, return_dict=False)[0]
        if cond.true_cfg > 1.0:
            v_c, v_u = v.chunk(2)
            v = v_u + cond.true_cfg * (v_c - v_u)
        return v

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        vae = self.pipe.vae
        x = self.pipe._unpack_latents(latents, self.height, self.width, self.factor)
        img = vae.decode(x / vae.config.scaling_factor + vae.config.shift_factor).sample
        return (img / 2 + 0.5).clamp(0, 1)
