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
    the budget), ⌊budget / V⌋ seeds each (``seed ..``); the best image by the reward for the
    original prompt wins. Variants the generator cannot encode are dropped (in the trace)."""
    rewriter = rewriter or default_rewriter(s.gen)
    texts, origin = [], []
    for p, prompt in enumerate(s.prompts):
        variants = _usable(s.gen, prompt, rewriter(prompt), s)
        limit = min(int(s.budget), 1 + (len(variants) if max_variants is None else min(max_variants, len(variants))))
        for v in [prompt, *variants][:limit]:
            texts.append(v)
            origin.append(p)
    per = {p: origin.count(p) for p in range(len(s.prompts))}
    texts_rows, rows, seeds = [], [], []
    for t, p in zip(texts, origin):
        n = int(s.budget) // per[p]
        texts_rows += [t] * n
        rows += [p] * n
        seeds += [s.seed + k for k in range(n)]
    rows_t = torch.tensor(rows)
    cond = s.gen.condition(texts_rows)
    noise = s.noise(seeds)
    s.spend.log("variants", counts=[per[p] for p in range(len(s.prompts))])
    x, _ = s.advance(noise, cond, 0, s.steps)
    images = s.images(x)
    info = [{"variant": t} for t in texts_rows]
    return s.result(images, s.score(images, rows_t), noise, seeds, rows_t, info)


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
