"""Where the pairs to judge come from, and the only way the app reads an image.

A source is one of
* a folder written by ``rewardlab eval geneval`` (``<index>/metadata.jsonl`` + ``samples/*.png``):
  pairs of images of the same prompt;
* a folder written by ``rewardlab search`` (``trace.json`` + ``candidates/rank_*.png``);
* any folder with a ``groups.jsonl``: one ``{"prompt": ..., "images": [relative paths]}`` a line;
* a preference parquet (``prompt, image_a, image_b``), to have its pairs judged again.

An image reference is a path relative to the source folder (or ``row:i:a`` in a parquet);
``Source.image`` refuses any reference that resolves outside the folder, a symlink included.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
from pathlib import Path

IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp"}


class SourceError(ValueError):
    """A source that cannot be read, or an image reference it will not serve."""


class FolderSource:
    def __init__(self, root: str | Path, groups: list[tuple[str, list[str]]]):
        self.root = Path(root).resolve()
        self.groups = groups
        for _, refs in groups:
            for ref in refs:
                self._path(ref)  # refuse a manifest that points outside the folder before serving anything

    def pairs(self, max_per_prompt: int = 10, seed: int = 0) -> list[tuple[str, str, str, str]]:
        """``(key, prompt, image_a, image_b)`` for up to ``max_per_prompt`` pairs of each group,
        drawn with ``seed``, the two sides in random order."""
        rng, out = random.Random(seed), []
        for prompt, refs in self.groups:
            combos = list(itertools.combinations(refs, 2))
            for a, b in rng.sample(combos, min(max_per_prompt, len(combos))):
                key = "|".join(sorted((a, b)))  # one pair, whichever way round it is drawn
                a, b = (a, b) if rng.random() < 0.5 else (b, a)
                out.append((key, prompt, a, b))
        return out

    def fingerprint(self) -> str:
        """Which images these are: their paths and sizes (a regenerated run differs)."""
        refs = sorted({r for _, refs in self.groups for r in refs})
        return _digest(f"{r}:{(self.root / r).stat().st_size}" for r in refs)

    def image(self, ref: str) -> tuple[bytes, str]:
        path = self._path(ref)
        return path.read_bytes(), IMAGE_TYPES[path.suffix.lower()]

    def _path(self, ref: str) -> Path:
        path = (self.root / ref).resolve()
        if not path.is_relative_to(self.root):
            raise SourceError(f"image {ref!r} lies outside the source folder {self.root}")
        if path.suffix.lower() not in IMAGE_TYPES or not path.is_file():
            raise SourceError(f"image {ref!r} is not an image file in {self.root}")
        return path


class ParquetSource:
    def __init__(self, path: str | Path):
        import pyarrow.parquet as pq

        self.root = Path(path).resolve()
        try:
            table = pq.read_table(path, columns=["prompt", "image_a", "image_b"])
        except (OSError, ValueError, KeyError) as e:
            raise SourceError(f"{path}: not a preference parquet with prompt, image_a, image_b ({e})") from None
        self.rows = table.to_pydict()

    def pairs(self, max_per_prompt: int = 10, seed: int = 0) -> list[tuple[str, str, str, str]]:
        return [(f"row:{i}", p, f"row:{i}:a", f"row:{i}:b") for i, p in enumerate(self.rows["prompt"])]

    def fingerprint(self) -> str:
        return _digest(hashlib.sha256(x).hexdigest() for col in ("image_a", "image_b") for x in self.rows[col])

    def image(self, ref: str) -> tuple[bytes, str]:
        kind, i, side = (ref.split(":") + ["", ""])[:3]
        if kind != "row" or not i.isdigit() or int(i) >= len(self.rows["prompt"]) or side not in ("a", "b"):
            raise SourceError(f"no image {ref!r} in {self.root}")
        return self.rows[f"image_{side}"][int(i)], "image/png"


def open_source(path: str | Path):
    """The source at ``path``; a ``SourceError`` saying what was expected if it is none."""
    path = Path(path)
    if path.is_file() and path.suffix == ".parquet":
        return ParquetSource(path)
    if not path.is_dir():
        raise SourceError(f"--source {path}: no such folder or .parquet file")
    for reader in (_groups_jsonl, _search_run, _geneval_run):
        groups = reader(path)
        if groups is not None:
            if not any(len(refs) > 1 for _, refs in groups):
                raise SourceError(f"{path}: no prompt has two images to compare")
            return FolderSource(path, groups)
    raise SourceError(f"{path}: expected groups.jsonl, a search run (trace.json) or a geneval run "
                      f"(<index>/metadata.jsonl with samples/*.png)")


def _digest(parts) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode() + b"\n")
    return h.hexdigest()[:16]


def _groups_jsonl(path: Path):
    file = path / "groups.jsonl"
    if not file.is_file():
        return None
    groups = []
    for n, line in enumerate(file.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            groups.append((str(row["prompt"]), [str(r) for r in row["images"]]))
        except (ValueError, KeyError, TypeError) as e:
            raise SourceError(f"{file}:{n}: expected {{\"prompt\": ..., \"images\": [...]}} ({e})") from None
    return groups


def _search_run(path: Path):
    file = path / "trace.json"
    if not file.is_file():
        return None
    try:
        prompts = json.loads(file.read_text(encoding="utf-8"))["prompts"]
        return [(p["prompt"], [r["file"] for r in p["ranked"]]) for p in prompts]
    except (ValueError, KeyError, TypeError) as e:
        raise SourceError(f"{file}: not a search trace with ranked candidates ({e})") from None


def _geneval_run(path: Path):
    folders = sorted(q for q in path.glob("[0-9]" * 5) if (q / "metadata.jsonl").is_file())
    if not folders:
        return None
    groups = []
    for q in folders:
        try:
            prompt = str(json.loads((q / "metadata.jsonl").read_text(encoding="utf-8").splitlines()[0])["prompt"])
        except (ValueError, IndexError, KeyError, TypeError, UnicodeDecodeError) as e:
            raise SourceError(f"{q / 'metadata.jsonl'}: no GenEval record with a prompt ({type(e).__name__})") from None
        groups.append((prompt, [s.relative_to(path).as_posix() for s in sorted((q / "samples").glob("*.png"))]))
    return groups
