"""The settings of the alignment recipes — torch-free, so ``rewardlab train RECIPE --help``
and ``--print-config`` cost nothing. Every recipe config nests the same sections
(``model``, ``sample``, ``reward``, ``train``, ``eval``) and adds its own algorithm fields
at the top level; YAML presets live in ``configs/`` and any key is overridden on the
command line as ``section.key=value``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

from ..config import setting


@dataclass
class ModelSettings:
    """Which generator is trained, and how."""

    generator: str = setting("shapeworld", "generator: shapeworld[:WEIGHTS], sd:DIR, sd3:DIR or flux:DIR")
    weights: Optional[Path] = setting(None, "ShapeWorld weights to start from (default: the shipped model)")
    lora_rank: int = setting(0, "LoRA rank on the denoiser's attention; 0 = full fine-tune (ShapeWorld only)",
                             min=0)
    lora_alpha: Optional[float] = setting(None, "LoRA alpha (default: the rank)", gt=0)
    step_type: Literal["flow_sde", "dance_sde", "cps", "ode"] = setting(
        "flow_sde", "flow models' stochastic step: flow_sde (Flow-GRPO), dance_sde (DanceGRPO), cps")
    noise_level: float = setting(0.7, "flow_sde/cps noise level a", min=0)
    eta: float = setting(1.0, "DDIM η for sd (1 = DDPO); dance_sde's η for flows", min=0)
    height: Optional[int] = setting(None, "image height for sd/sd3/flux (default: the pipeline's)", min=8)
    width: Optional[int] = setting(None, "image width for sd/sd3/flux (default: the pipeline's)", min=8)
    max_sequence_length: Optional[int] = setting(None, "sd3/flux: text tokens per prompt (default: the "
                                                      "adapter's)", min=1)
    device: str = setting("cpu", "torch device (cpu, cuda, cuda:1); under torchrun each rank takes cuda:LOCAL_RANK")
    compile: bool = setting(False, "torch.compile the denoiser's passes without gradients (rollouts, evaluation, "
                                   "old-policy and reference passes): on 2 CPU cores 1.24-1.34x faster ShapeWorld "
                                   "sampling after about a minute of compiling per batch shape; passes with "
                                   "gradients stay eager")


@dataclass
class TagWeights:
    """How often each ShapeWorld tag's prompts are drawn (relative; 0 = never)."""

    single_object: float = setting(1.0, "weight of single-object prompts", min=0)
    two_object: float = setting(1.0, "weight of two-object prompts", min=0)
    counting: float = setting(1.0, "weight of counting prompts", min=0)
    colors: float = setting(1.0, "weight of colour prompts", min=0)
    position: float = setting(1.0, "weight of position prompts", min=0)
    color_attr: float = setting(1.0, "weight of colour-attribute prompts", min=0)


@dataclass
class SampleSettings:
    """Rollouts: prompts, groups and the sampler."""

    prompts: str = setting("shapeworld", "prompt source: 'shapeworld' (the train split, never a held-out "
                                         "composition) or a .txt file with one prompt per line")
    tags: TagWeights = field(default_factory=TagWeights)
    group_size: int = setting(8, "samples per prompt (G); advantages compare within a group", min=1)
    prompts_per_epoch: int = setting(16, "prompts per epoch (one batch of rollouts)", min=1)
    steps: int = setting(10, "sampling steps of a rollout", min=1)
    guidance: Optional[float] = setting(None, "guidance scale of rollouts (default: the generator's; 1 = off)",
                                        min=1)
    batch_size: int = setting(32, "images per sampling forward pass", min=1)


@dataclass
class RewardSettings:
    """Rewards from the registry (``rewardlab rewards``), aggregated into one signal."""

    names: list[str] = setting(["shapeworld"], "rewards to optimise")
    weights: list[float] = setting([], "one weight per reward (default: 1 each)")
    options: list[str] = setting(["shapeworld.mode=partial"], "reward options as REWARD.KEY=VALUE")
    aggregate: Literal["weighted_sum", "decoupled", "log_tamed", "win_rate"] = setting(
        "weighted_sum", "how several rewards combine (rewards/combine.py); win_rate: each sample's in-group win "
                        "rate under one pairwise reward (Pref-GRPO)")
    monitors: list[str] = setting([], "rewards only logged, never optimised (the gold signal)")


@dataclass
class TrainSettings:
    """The optimiser, the run's length and its checkpoints."""

    epochs: int = setting(100, "epochs: each samples one batch of rollouts (a rerun resumes towards this)", min=1)
    lr: float = setting(1e-4, "AdamW learning rate", gt=0)
    weight_decay: float = setting(0.0, "AdamW weight decay", min=0)
    max_grad_norm: float = setting(1.0, "gradient-norm clip", gt=0)
    minibatches: int = setting(2, "optimiser steps per pass over a batch of rollouts", min=1)
    inner_epochs: int = setting(1, "passes over each batch of rollouts", min=1)
    seed: int = setting(0, "seeds prompts, rollout noise and training noise", min=0)
    checkpoint_every: int = setting(5, "epochs between atomic checkpoints", min=1)


@dataclass
class EvalSettings:
    """Held-out evaluation during training (ShapeWorld: the eval split, GenEval-style)."""

    every: int = setting(10, "epochs between evaluations (0 = only at the end)", min=0)
    per_tag: int = setting(8, "eval records per tag", min=1)
    images_per_prompt: int = setting(2, "images per eval record", min=1)
    steps: int = setting(20, "sampling steps at evaluation (deterministic)", min=1)
    guidance: Optional[float] = setting(None, "guidance at evaluation (default: the generator's)", min=1)
    prompts: Optional[Path] = setting(None, "for other generators: a .txt file of held-out prompts")


@dataclass
class Sections:
    model: ModelSettings = field(default_factory=ModelSettings)
    sample: SampleSettings = field(default_factory=SampleSettings)
    reward: RewardSettings = field(default_factory=RewardSettings)
    train: TrainSettings = field(default_factory=TrainSettings)
    eval: EvalSettings = field(default_factory=EvalSettings)


@dataclass
class GRPOConfig(Sections):
    """DDPO / Flow-GRPO / DanceGRPO / MixGRPO (``align/grpo.py``)."""

    advantage: Literal["group", "global", "running"] = setting(
        "group", "normalise rewards per group (GRPO), by the batch std (Dr. GRPO-style) or by per-prompt "
                 "running statistics (DDPO)")
    adv_clip: float = setting(5.0, "advantages are clipped to ±adv_clip", gt=0)
    clip_range: float = setting(1e-4, "PPO ratio clip ε (Flow-GRPO: 1e-4; DDPO: 1e-4)", gt=0)
    window: int = setting(0, "SDE window: stochastic steps per rollout, ODE elsewhere (0 = every step)", min=0)
    window_start: Optional[int] = setting(None, "first step of the window (default: drawn per epoch from "
                                                "[0, window_max_start], as Flow-GRPO-Fast/MixGRPO)", min=0)
    window_max_start: Optional[int] = setting(None, "latest drawn window start (default: steps // 2)", min=0)
    step_fraction: float = setting(1.0, "fraction of the stochastic steps trained on per minibatch", gt=0, max=1)
    kl: float = setting(0.0, "weight of the closed-form KL to the reference, ‖μθ − μref‖²/(2σ²) (Flow-GRPO)",
                        min=0)
    ratio_norm: bool = setting(False, "GRPO-Guard ratio normalisation (flow steps)")
    train_guidance: bool = setting(True, "train the guided policy that sampled the rollouts (else the "
                                         "conditional one)")
    train_uncond: bool = setting(False, "let gradients reach the unconditional pass of guidance too (it is "
                                        "shared by every prompt; off keeps it as the anchor)")


@dataclass
class JudgeSettings(RewardSettings):
    """A pairwise judge (``rewardlab rewards``: preference, vlm_judge) whose in-group win rates are the reward."""

    names: list[str] = setting(["preference"], "the pairwise judge (one reward with compare())")
    options: list[str] = setting([], "judge and monitor options as REWARD.KEY=VALUE")
    aggregate: Literal["win_rate"] = setting("win_rate", "each sample's in-group win rate under the judge")


@dataclass
class PrefGRPOConfig(GRPOConfig):
    """Pref-GRPO (``align/pref_grpo.py``): grpo rewarded by in-group win rates of a pairwise judge."""

    reward: JudgeSettings = field(default_factory=JudgeSettings)


@dataclass
class NFTConfig(Sections):
    """DiffusionNFT and advantage-weighted matching (``align/nft.py``)."""

    loss: Literal["nft", "awm"] = setting("nft", "nft: DiffusionNFT's implicit ± policies; awm: "
                                                "advantage-weighted flow matching")
    beta: float = setting(1.0, "NFT strength β of the implicit policies", gt=0)
    adv_clip: float = setting(5.0, "advantages are clipped to ±adv_clip, then mapped to r ∈ [0, 1]", gt=0)
    clip_range: float = setting(1e-4, "awm: PPO clip on the matching-loss ratio", gt=0)
    timesteps: int = setting(2, "training noise levels per rollout, drawn from the sampler's own", min=1)
    min_level: float = setting(0.0, "train only at the sampler's noise levels t >= this (the early, high-noise "
                                    "steps decide the layout)", min=0, max=1)
    kl: float = setting(0.0, "weight of ‖vθ − vref‖² (a pull towards the reference model)", min=0)
    old_decay: float = setting(0.5, "the old policy's slowest EMA decay (DiffusionNFT: min(0.001·step, 0.5))",
                               min=0, max=1)
    old_decay_rate: float = setting(0.001, "decay growth per optimiser step", min=0)
    train_guidance: bool = setting(True, "train the guided velocity (rollouts guided, eval guided alike)")
    train_uncond: bool = setting(False, "let gradients reach the unconditional pass of guidance too (it is "
                                        "shared by every prompt; off keeps it as the anchor)")
    skip_flat_groups: bool = setting(True, "skip groups whose rewards are all equal (no signal)")


@dataclass
class BackpropConfig(Sections):
    """Reward backpropagation: DRaFT-K / AlignProp, DRaFT-LV, ReFL (``align/backprop.py``)."""

    mode: Literal["draft", "draft_lv", "refl"] = setting(
        "draft", "draft: gradients through the last k steps (k = steps with checkpoint: AlignProp); draft_lv: "
                 "through the last step of re-noised samples; refl: one step from a late state to its x0-prediction")
    k: int = setting(1, "draft: sampler steps the gradient flows through (the last ones)", min=1)
    checkpoint: bool = setting(False, "recompute each differentiated step in the backward pass (AlignProp's memory "
                                      "saving)")
    lv_samples: int = setting(2, "draft_lv: re-noised copies of each sample", min=1)
    refl_range: list[float] = setting([0.7, 0.9], "refl: the step is drawn from these fractions of the schedule")
    train_uncond: bool = setting(False, "let gradients reach the unconditional pass of guidance too (it is shared "
                                        "by every prompt; off keeps it as the anchor, as grpo and nft do)")


# ---- rm: a reward model trained on preference pairs. No generator is sampled, so it has none
# of the sampling sections: its data are pairs, its model the scorer, its unit the optimiser step.
@dataclass
class RMDataSettings:
    """Preference pairs: parquet files with prompt, image_a, image_b (PNG bytes) and label (1, 0 or
    0.5 for a tie), from ``rewardlab rm make-shapeworld`` or ``rewardlab annotate export``."""

    train: Optional[Path] = setting(None, "preference parquet to train on (required)")
    eval: Optional[Path] = setting(None, "held-out preference parquet: loss and accuracy every eval.every steps "
                                         "(default: none)")


@dataclass
class RMModelSettings:
    """The scorer: ShapeCLIP's architecture, s(image, prompt) = exp(τ)·cos (the ``preference`` reward)."""

    weights: Optional[Path] = setting(None, "ShapeCLIP or preference weights to start from, e.g. the contrastive "
                                            "shapeclip.safetensors (default: random initial weights)")
    device: str = setting("cpu", "torch device (cpu, cuda, cuda:1)")


@dataclass
class RMTrainSettings:
    """The optimiser, the run's length and its checkpoints."""

    steps: int = setting(600, "optimiser steps (a rerun resumes towards this)", min=1)
    batch_size: int = setting(64, "pairs per step, drawn with replacement by a generator seeded by (seed, step)",
                              min=1)
    lr: float = setting(1e-3, "AdamW learning rate", gt=0)
    weight_decay: float = setting(0.01, "AdamW weight decay", min=0)
    max_grad_norm: Optional[float] = setting(None, "gradient-norm clip (default: none)", gt=0)
    seed: int = setting(0, "seeds the initial weights and the pairs of each step", min=0)
    checkpoint_every: int = setting(100, "steps between atomic checkpoints (the weights are exported with each)",
                                    min=1)


@dataclass
class RMEvalSettings:
    """Evaluation on data.eval: Bradley–Terry loss and accuracy on its decided (non-tie) pairs."""

    every: int = setting(100, "steps between evaluations (0 = only at the end)", min=0)
    batch_size: int = setting(256, "pairs per forward pass", min=1)


@dataclass
class RMConfig:
    """A Bradley–Terry reward model on preference pairs (``align/reward_model.py``)."""

    data: RMDataSettings = field(default_factory=RMDataSettings)
    model: RMModelSettings = field(default_factory=RMModelSettings)
    train: RMTrainSettings = field(default_factory=RMTrainSettings)
    eval: RMEvalSettings = field(default_factory=RMEvalSettings)


@dataclass
class DPOConfig(Sections):
    """Diffusion-DPO on an offline preference data set (``align/dpo.py``). An epoch trains on
    ``sample.prompts_per_epoch × sample.group_size`` pairs (the presets set group_size 1, so
    prompts_per_epoch counts pairs), in ``train.minibatches`` optimiser steps; the prompts come
    from the data set (``sample.prompts`` and ``reward`` serve only the evaluation of generators
    other than ShapeWorld)."""

    data: Optional[Path] = setting(None, "preference data: rewardlab's parquet (prompt, image_a, image_b, label), "
                                         "Pick-a-Pic v2 parquet, HPDv2 / ImageRewardDB json, MJ-Bench parquet/jsonl")
    data_format: Literal["auto", "preference", "pickapic", "hpdv2", "imagereward", "mjbench"] = setting(
        "auto", "the data's format (auto: told by its columns); rankings give every ordered pair, ties are left out")
    image_root: Optional[Path] = setting(None, "folder that image paths in the data are relative to (default: "
                                               "the data file's)")
    beta: float = setting(5000.0, "β of Diffusion-DPO, with T·ω(λ) folded in (the released SD 1.5/SDXL runs: 5000)",
                          gt=0)
    timesteps: int = setting(1, "draws of (t, ε) per pair and pass, each shared by winner and loser (the paper: 1)",
                             min=1)


@dataclass
class OnlineDPOConfig(Sections):
    """Online preference optimisation on the policy's own samples, D3PO / RankDPO-style
    (``align/online_dpo.py``): each group of ``sample.group_size`` samples is judged by the
    reward (``reward.aggregate=win_rate`` with a pairwise judge: by its in-group win rates)."""

    pairs: Literal["best_worst", "all", "rank"] = setting(
        "best_worst", "which pairs of a group train: its best against its worst sample, every pair with a decided "
                      "order (D3PO), or every pair weighted by RankDPO's ΔDCG")
    beta: float = setting(2000.0, "β of the DPO loss, T·ω(λ) folded in", gt=0)
    timesteps: int = setting(2, "draws of (t, ε) per group and pass, each shared by the group's samples", min=1)
    min_level: float = setting(0.0, "draw t from the sampler's own levels with noise fraction >= this (the early, "
                                    "high-noise steps decide the layout)", min=0, max=1)
    ref_every: int = setting(0, "epochs between moving the reference to the current policy (iterative online "
                                "DPO); 0 = the starting model throughout", min=0)
    train_guidance: bool = setting(False, "compare guided predictions (the policy that sampled) instead of the "
                                          "conditional ones (Diffusion-DPO)")
