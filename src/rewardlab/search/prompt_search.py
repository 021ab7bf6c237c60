"""Prompt search (after PromptEnhancer, 2025): a rewriter proposes variants of the prompt;
each variant is generated and scored against the *original* prompt (and its record), so a
variant wins only by producing what was asked for. Rewriters are callables
``prompt -> [variants]``: rule-based for ShapeWorld (``rewriters.shapeworld``), generic
detail phrases for any model, or a causal language model through transformers
(``rewriters.LLMRewriter``)."""

from __future__ import annotations

from typing import Callable

import torch

from .budget import SearchResult
from .common import Search, method
from .rewriters import default_rewriter


@method("prompt_search")
def prompt_search(s: Search, rewriter: Callable[[str], list[str]] | None = None,
                  max_variants: int | None = None) -> SearchResult:
    """V prompts per prompt (the original and up to ``max_variants`` rewrites, never more than
    the budget) share the ⌊budget⌋ samples (seeds ``seed ..`` for each; the first variants take
    the remainder); the best image by the reward for the original prompt wins. Variants the
    generator cannot encode are dropped (in the trace)."""
    if max_variants is not None and max_variants < 0:
        raise ValueError(f"max_variants must be at least 0, got {max_variants}")
    rewriter = rewriter or default_rewriter(s.gen)
    n = int(s.budget)
    texts, rows, seeds, counts = [], [], [], []
    for p, prompt in enumerate(s.prompts):
        variants = _usable(s.gen, prompt, rewriter(prompt), s)[:max_variants]
        chosen = [prompt, *variants][:n]
        counts.append(len(chosen))
        for j, v in enumerate(chosen):
            k = n // len(chosen) + (j < n % len(chosen))
            texts += [v] * k
            rows += [p] * k
            seeds += [s.seed + i for i in range(k)]
    unique = list(dict.fromkeys(texts))
    cond = s.gen.condition(unique)[[unique.index(t) for t in texts]]  # each text encoded once
    noise = s.noise(seeds)
    s.spend.log("variants", counts=counts)
    x, _ = s.advance(noise, cond, 0, s.steps)
    images = s.images(x)
    rows_t = torch.tensor(rows)
    return s.result(images, s.score(images, rows_t), noise, seeds, rows_t, [{"variant": t} for t in texts])


def _usable(gen, prompt: str, variants: list[str], s: Search) -> list[str]:
    """Distinct variants other than the prompt that the generator can encode."""
    out = []
    for v in dict.fromkeys(v.strip() for v in variants):
        if not v or v == prompt:
            continue
        try:
            gen.condition([v])
        except ValueError as e:  # e.g. a word the ShapeWorld encoder does not know
            s.spend.log("variant_dropped", prompt=prompt, variant=v, reason=str(e))
            continue
        out.append(v)
    return out
