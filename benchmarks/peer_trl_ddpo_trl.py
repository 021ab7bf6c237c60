"""TRL side of benchmarks/peer_trl_ddpo.py; runs in the ``.venv-trl`` venv (transformers 4.x).

    build DIR              save the tiny random-weight Stable Diffusion pipeline both stacks load
    train DIR PROMPTS ...  run TRL's DDPOTrainer and print one JSON line of per-epoch seconds
"""

import argparse
import io
import json
import random
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

LETTERS = "abcdefghijklmnopqrstuvwxyz"
WIDTH = 64  # text width = UNet cross-attention width


def tokenizer(tmp: Path):
    """CLIP tokenizer over single letters (tests/helpers/tiny_pipelines.clip_tokenizer, as files for 4.x)."""
    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in LETTERS:
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    (tmp / "vocab.json").write_text(json.dumps(vocab))
    (tmp / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(str(tmp / "vocab.json"), str(tmp / "merges.txt"), bos_token="<|startoftext|>",
                         eos_token="<|endoftext|>", pad_token="<|endoftext|>", unk_token="<|endoftext|>",
                         model_max_length=77)


def build(out: Path) -> None:
    """tests/helpers/tiny_pipelines.tiny_sd, wider, with a 3-downsample VAE: 64x64 images, 8x8 latents."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        tok = tokenizer(Path(tmp))
    text = CLIPTextModel(CLIPTextConfig(vocab_size=len(tok.get_vocab()), hidden_size=WIDTH, intermediate_size=128,
                                        num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=77,
                                        bos_token_id=0, eos_token_id=1, pad_token_id=1))
    unet = UNet2DConditionModel(block_out_channels=(64, 128), layers_per_block=2, sample_size=8, in_channels=4,
                                out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=WIDTH,
                                norm_num_groups=16, attention_head_dim=8)
    vae = AutoencoderKL(block_out_channels=(16, 32, 32, 32), in_channels=3, out_channels=3, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                        norm_num_groups=8, sample_size=64)
    sched = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                          set_alpha_to_one=False, steps_offset=1)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tok, unet=unet, scheduler=sched,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(out)


def jpeg_compressibility(images, prompts, metadata):
    """rewardlab's jpeg_compressibility: minus the JPEG size in kB at quality 95 of the uint8 images."""
    arr = images.detach().float().clamp(0, 1).mul(255).round().byte().permute(0, 2, 3, 1).cpu().numpy()
    sizes = []
    for img in arr:
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=95)
        sizes.append(buf.tell() / 1000)
    return -torch.tensor(sizes), {}


def train(a) -> None:
    from accelerate import PartialState
    from trl import DDPOConfig, DDPOTrainer, DefaultDDPOStableDiffusionPipeline

    PartialState()  # trl 0.23.1 needs it before a pipeline folder without LoRA weights is loaded
    prompts = Path(a.prompts).read_text().split("\n")
    prompts = [p for p in prompts if p.strip()]
    rng = random.Random(0)
    cfg = DDPOConfig(num_epochs=a.epochs, sample_num_steps=a.steps, sample_eta=1.0, sample_guidance_scale=a.guidance,
                     sample_batch_size=a.batch_size, sample_num_batches_per_epoch=a.batches,
                     train_batch_size=a.batch_size, train_gradient_accumulation_steps=a.grad_accum,
                     train_learning_rate=a.lr, mixed_precision="no", train_use_8bit_adam=False,
                     per_prompt_stat_tracking=True, per_prompt_stat_tracking_buffer_size=32,
                     per_prompt_stat_tracking_min_count=16, train_timestep_fraction=1.0, train_num_inner_epochs=1,
                     train_adv_clip_max=5.0, train_clip_range=1e-4, log_with=None, save_freq=10**9,
                     logdir=str(Path(a.out) / "logs"), project_kwargs={"project_dir": a.out})
    pipe = DefaultDDPOStableDiffusionPipeline(a.folder, use_lora=True)
    trainer = DDPOTrainer(cfg, jpeg_compressibility, lambda: (rng.choice(prompts), {}), pipe)
    times, step = [], 0
    for epoch in range(a.epochs):
        t0 = time.perf_counter()
        step = trainer.step(epoch, step)
        times.append(time.perf_counter() - t0)
    print(json.dumps({"epoch_s": times, "updates": step}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("build").add_argument("folder", type=Path)
    t = sub.add_parser("train")
    t.add_argument("folder")
    t.add_argument("prompts")
    t.add_argument("--out", required=True)
    for name, typ in [("epochs", int), ("steps", int), ("guidance", float), ("batch_size", int), ("batches", int),
                      ("grad_accum", int), ("lr", float), ("threads", int)]:
        t.add_argument("--" + name.replace("_", "-"), type=typ, required=True)
    a = ap.parse_args()
    if a.cmd == "build":
        build(a.folder)
    else:
        torch.set_num_threads(a.threads)
        train(a)


if __name__ == "__main__":
    main()
