"""``vlm_judge``: a vision-language model asked a question about the image.

Score mode (VQAScore, Lin et al. 2024; RewardDance): the probability that the model
answers ``yes`` to ``question`` — teacher-forced, so a multi-token answer is scored
exactly; with ``no`` given, P(yes) / (P(yes) + P(no)). Pairwise mode (UnifiedReward,
Pref-GRPO): both images in one message, P(answer "1") against P("2"), averaged over
both orders so the judge's position bias cancels. Any transformers
``AutoModelForImageTextToText`` checkpoint with a chat template works (LLaVA,
Qwen2-VL, ...). Not differentiable: the processor works on PIL images.
"""

from __future__ import annotations

from typing import Sequence

import torch

from ..images import to_uint8
from .base import Reward, RewardError, RewardOutput
from .registry import register

QUESTION = 'Does this figure show "{prompt}"? Please answer yes or no.'
PAIR_QUESTION = ('Which image matches the caption "{prompt}" better, the first or the second? '
                 'Answer 1 or 2.')


class VLMJudge(Reward):
    name = "vlm_judge"
    differentiable = False
    pairwise = True

    def __init__(self, model: str, question: str = QUESTION, yes: str = "Yes", no: str | None = None,
                 pair_question: str = PAIR_QUESTION, pair_answers: tuple[str, str] = ("1", "2"),
                 device: str = "cpu", dtype: str = "float32", batch_size: int = 8,
                 max_prompt_tokens: int | None = None):
        from transformers import AutoModelForImageTextToText, AutoProcessor

        from ..utils import local_files_only

        for tpl in (question, pair_question):
            if "{prompt}" not in tpl:
                raise ValueError(f"question template must contain {{prompt}}: {tpl!r}")
        if not isinstance(getattr(torch, dtype, None), torch.dtype):
            raise ValueError(f"dtype must name a torch dtype (float32, bfloat16, float16), got {dtype!r}")
        offline = local_files_only(model)
        try:
            self.processor = AutoProcessor.from_pretrained(model, local_files_only=offline)
            self.model = AutoModelForImageTextToText.from_pretrained(
                model, local_files_only=offline, dtype=getattr(torch, dtype)).to(device).eval()
        except OSError as e:
            raise FileNotFoundError(f"vlm_judge: cannot load {model!r} ({e}); pass a local folder or a hub id "
                                    f"of an image-text-to-text model (e.g. llava-hf/llava-1.5-7b-hf) and "
                                    f"download it first where the hub is unreachable") from e
        self.processor.tokenizer.padding_side = "right"
        self.question, self.yes, self.no = question, yes, no
        self.pair_question, self.pair_answers = pair_question, pair_answers
        self.batch_size = batch_size
        text_config = self.model.config.get_text_config()
        self.max_prompt_tokens = max_prompt_tokens or getattr(text_config, "max_position_embeddings", None) or 4096

    # -- public API ---------------------------------------------------------------------
    def score(self, images, prompts, metadata):
        pil = _to_pil(images)
        answers = [self.yes] + ([self.no] if self.no else [])
        logp = self._answer_logprobs([[im] for im in pil], [self.question.format(prompt=p) for p in prompts],
                                     answers)
        p = logp.exp()
        scores = p[:, 0] / p.sum(1) if self.no else p[:, 0]
        return RewardOutput(scores, sub_scores={"p_yes": p[:, 0]})

    def compare(self, images_a: torch.Tensor, images_b: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        """P(a beats b) for each pair, [B], averaged over both presentation orders (NaN where
        the prompt is longer than the model's context)."""
        images_a, prompts = self.check(images_a, prompts)
        images_b, _ = self.check(images_b, prompts)
        if images_a.shape != images_b.shape:
            raise RewardError(f"pairwise images differ in shape: {tuple(images_a.shape)} vs {tuple(images_b.shape)}")
        pa, pb = _to_pil(images_a), _to_pil(images_b)
        q = [self.pair_question.format(prompt=p) for p in prompts]
        logp = self._answer_logprobs([[x, y] for x, y in zip(pa, pb)] + [[y, x] for x, y in zip(pa, pb)],
                                     q + q, list(self.pair_answers))
        first = logp.softmax(1)[:, 0]  # P("1") vs P("2"), per order
        n = len(pa)
        return 0.5 * (first[:n] + (1 - first[n:]))

    # -- internals ------------------------------------------------------------------------
    def _answer_logprobs(self, images: list[list], questions: list[str], answers: list[str]) -> torch.Tensor:
        """log P(answer | images, question) for every (row, answer): [N, len(answers)]; NaN
        (so: invalid) for a question longer than the model's context."""
        tok = self.processor.tokenizer
        fits = torch.tensor([len(tok(q, add_special_tokens=False).input_ids) <= self.max_prompt_tokens
                             for q in questions])
        rows = [(im, q, a) for im, q, ok in zip(images, questions, fits) if ok for a in answers]
        out = torch.full((len(images), len(answers)), float("nan"))
        if rows:
            logp = [self._teacher_forced(rows[i:i + self.batch_size]) for i in range(0, len(rows), self.batch_size)]
            out[fits] = torch.cat(logp).view(-1, len(answers))
        return out

    @torch.no_grad()
    def _teacher_forced(self, rows) -> torch.Tensor:
        tok = self.processor.tokenizer
        fulls, n_answer = [], []
        for ims, q, a in rows:
            content = [{"type": "image"} for _ in ims] + [{"type": "text", "text": q}]
            msgs = [{"role": "user", "content": content}]
            prompt = self.processor.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
            full = prompt + (" " if prompt and not prompt[-1].isspace() else "") + a
            n = len(tok(full, add_special_tokens=False).input_ids) - len(tok(prompt, add_special_tokens=False).input_ids)
            if n < 1:
                raise RewardError(f"vlm_judge: answer {a!r} adds no tokens after the prompt")
            fulls.append(full)
            n_answer.append(n)
        inputs = self.processor(images=[ims for ims, _, _ in rows], text=fulls, padding=True, return_tensors="pt")
        inputs = inputs.to(self.model.device)
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        logits = self.model(**inputs).logits
        ids, lengths = inputs["input_ids"], inputs["attention_mask"].sum(1)
        total = []
        for r, (length, n) in enumerate(zip(lengths.tolist(), n_answer)):
            pos = torch.arange(length - n, length, device=logits.device)
            # normalise only the positions that predict the answer: [B, L, V] in float32 is GBs
            logp = logits[r, pos - 1].float().log_softmax(-1)
            total.append(logp.gather(1, ids[r, pos, None]).sum())
        return torch.stack(total).cpu()


def _to_pil(images: torch.Tensor) -> list:
    from PIL import Image

    return [Image.fromarray(a) for a in to_uint8(images)]


register("vlm_judge", "P('Yes') from any image-text-to-text VLM (VQAScore); pairwise 1-vs-2 judging "
                      "(UnifiedReward style); model=DIR|HUB_ID")(VLMJudge)
