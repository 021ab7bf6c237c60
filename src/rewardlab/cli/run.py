"""``rewardlab generate`` and ``rewardlab demo``: the embedded model at work."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .common import (DEFAULT_GUIDANCE, DEFAULT_STEPS, app, check_output_dir, check_output_file, console, fail,
                     finite, progress_bar)

MAX_IMAGES = 1000  # per `generate` call: they are tiled into one PNG


@app.command()
def generate(
    prompt: str = typer.Argument(..., help="A ShapeWorld prompt, e.g. 'a photo of two red circles'."),
    out: Path = typer.Option(Path("out.png"), "-o", "--out", help="PNG to write."),
    seed: int = typer.Option(0, help="Seed of the first image; image i uses seed + i."),
    n: int = typer.Option(1, "-n", min=1, max=MAX_IMAGES, help="Number of images (tiled into one grid when > 1)."),
    steps: int = typer.Option(DEFAULT_STEPS, min=1, help="Sampling steps."),
    guidance: float = typer.Option(DEFAULT_GUIDANCE, callback=finite, help="Classifier-free guidance scale."),
    scale: int = typer.Option(4, min=1, help="Nearest-neighbour upscaling of the saved PNG."),
    weights: Optional[Path] = typer.Option(None, help="Model weights (default: the shipped model)."),
    check: bool = typer.Option(True, help="Verify each image against the prompt and print the verdict."),
):
    """Generate images with the embedded ShapeWorld model."""
    from ..images import MAX_PIXELS, grid, save_png, to_uint8
    from ..world.model import ShapeWorldModel
    from ..world.records import RecordError, parse_prompt
    from ..world.sample import sample
    from ..world.verify import verify

    try:
        record = parse_prompt(prompt)
    except RecordError as e:
        fail(str(e))
    check_output_file(out, (".png",))
    try:
        model = ShapeWorldModel.load(weights)
    except (FileNotFoundError, ValueError) as e:
        fail(str(e))
    cols = min(n, 8)
    side = model.config.resolution + (2 if n > 1 else 0)
    width, height = cols * side * scale, -(-n // cols) * side * scale
    if width * height > MAX_PIXELS:
        fail(f"the PNG would be {width}x{height} pixels, over {MAX_PIXELS}; lower -n or --scale")
    with progress_bar("generating", n) as advance:
        images = to_uint8(sample(model, [record["prompt"]] * n, [seed + i for i in range(n)], steps=steps,
                                 guidance=guidance, progress=advance))
    save_png(images[0] if n == 1 else grid(images, cols), out, scale=scale)
    if check:
        for i, img in enumerate(images):
            v = verify(img, record)
            console.print(f"seed {seed + i}: {'correct' if v.correct else 'incorrect'} "
                          f"(partial credit {v.score:.2f}){' — ' + v.reason if v.reason else ''}")
    console.print(f"wrote {out}")


DEMO_PROMPTS = ["a photo of a circle", "a photo of two red circles", "a photo of a blue square",
                "a photo of a triangle left of a square", "a photo of a red circle and a blue square",
                "a photo of three triangles"]


@app.command()
def demo(out: Path = typer.Option(Path("outputs/demo"), help="Folder for the grid and evaluation."),
         per_tag: int = typer.Option(12, min=1, help="Eval records per tag for the quick GenEval table."),
         images_per_prompt: int = typer.Option(2, min=1, help="Images per eval record.")):
    """The main job on the embedded default: a sample grid and the base GenEval-style table."""
    from ..eval.geneval import clear_output, first_per_tag, format_summary, run_geneval, summarize
    from ..images import grid, save_png
    from ..world.prompts import prompt_set_path
    from ..world.records import load_records
    from ..world.sample import sample_fn
    from .evaluate import prepare_geneval_output

    check_output_dir(out)
    earlier = prepare_geneval_output(out / "geneval", overwrite=True)  # the demo replaces its own last run
    try:
        fn = sample_fn(None, steps=DEFAULT_STEPS, guidance=DEFAULT_GUIDANCE)
    except (FileNotFoundError, ValueError) as e:
        fail(str(e))
    clear_output(earlier)
    prompts = [p for p in DEMO_PROMPTS for _ in range(8)]
    images = fn(prompts, list(range(len(prompts))))
    save_png(grid(images, 8), out / "grid.png", scale=4)
    console.print(f"sample grid (rows: {'; '.join(DEMO_PROMPTS)}) → {out / 'grid.png'}")
    records = first_per_tag(load_records(prompt_set_path("eval")), per_tag)
    with progress_bar("base GenEval-style eval", len(records) * images_per_prompt) as advance:
        results = run_geneval(fn, records, images_per_prompt, out / "geneval", progress=advance)
    print(format_summary(summarize(results)))
