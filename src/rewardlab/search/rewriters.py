"""Prompt rewriters for ``prompt_search``: ``prompt -> [variants]``.

* ``shapeworld``: rewrites that keep a ShapeWorld prompt's meaning inside the vocabulary the
  model was trained on — the converse relation ("a circle left of a square" ↔ "a square
  right of a circle"), the other order of two objects, and the prompt without "a photo of".
* ``details``: generic detail phrases (PromptEnhancer's most common additions) for real models.
* ``LLMRewriter``: a causal language model from transformers that writes variants.
"""

from __future__ import annotations

import re

CONVERSE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
_PREFIX = "a photo of "


def shapeworld(prompt: str) -> list[str]:
    """Equivalent ShapeWorld phrasings (none for a prompt it cannot read)."""
    from ..world.records import RecordError, parse_prompt

    try:
        rec = parse_prompt(prompt)
    except RecordError:
        return []
    body = prompt[len(_PREFIX):] if prompt.startswith(_PREFIX) else prompt
    bodies = [body]
    if rec["tag"] == "position":
        rel = "|".join(map(re.escape, CONVERSE))
        m = re.fullmatch(rf"(an? .+?) ({rel}) (an? .+)", body)
        if m:
            bodies.append(f"{m[3]} {CONVERSE[m[2]]} {m[1]}")
    elif rec["tag"] in ("two_object", "color_attr"):
        a, _, b = body.partition(" and ")
        bodies.append(f"{b} and {a}")
    out = [_PREFIX + b for b in bodies] + bodies
    return [v for v in dict.fromkeys(out) if v != prompt]


DETAILS = ("highly detailed", "sharp focus", "professional photograph", "vivid colors", "8k")


def details(prompt: str) -> list[str]:
    """The prompt with one detail phrase appended, for models trained on web captions."""
    return [f"{prompt}, {d}" for d in DETAILS]


def default_rewriter(gen):
    return shapeworld if getattr(gen, "name", "") == "shapeworld" else details


class LLMRewriter:
    """Variants from a causal LM (any ``AutoModelForCausalLM`` folder or hub id): ``n``
    sampled continuations of ``template``, one line each, seeded for reproducibility."""

    TEMPLATE = "Rewrite the image prompt to be clearer and more detailed.\nPrompt: {prompt}\nRewrite:"

    def __init__(self, model: str, n: int = 4, max_new_tokens: int = 40, temperature: float = 0.8,
                 template: str = TEMPLATE, seed: int = 0, device: str = "cpu"):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model)
        self.model = AutoModelForCausalLM.from_pretrained(model).to(device).eval()
        self.n, self.max_new_tokens, self.temperature = n, max_new_tokens, temperature
        self.template, self.seed = template, seed

    def __call__(self, prompt: str) -> list[str]:
        import torch

        enc = self.tokenizer(self.template.format(prompt=prompt), return_tensors="pt").to(self.model.device)
        torch.manual_seed(self.seed)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        with torch.no_grad():
            out = self.model.generate(**enc, do_sample=True, temperature=self.temperature, num_return_sequences=self.n,
                                      max_new_tokens=self.max_new_tokens, pad_token_id=pad)
        texts = self.tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        return [t.strip().split("\n")[0].strip() for t in texts if t.strip()]
