"""``rewardlab generate`` and ``rewardlab demo``: generators at work (the embedded model by default)."""

from __future__ import annotations

from pathlib import Path

import typer

from .common import (SampleConfig, app, check_output_dir, check_output_file, config_options, console, fail,
                     load_sampler, progress_bar)

MAX_IMAGES = 1000  # per `generate` call: they are tiled into one PNG


@app.command()
@config_options(SampleConfig, files=False)
def generate(
    cfg: SampleConfig,
    prompt: str = typer.Argument(..., help="A prompt; for ShapeWorld e.g. 'a photo of two red circles'."),
    out: Path = typer.Option(Path("out.png"), "-o", "--out", help="PNG to write."),
    seed: int = typer.Option(0, min=0, max=2**31 - 1, help="Seed of the first image; image i uses seed + i."),
    n: int = typer.Option(1, "-n", min=1, max=MAX_IMAGES, help="Number of images (tiled into one grid when > 1)."),
    scale: int = typer.Option(4, min=1, help="Nearest-neighbour upscaling of the saved PNG."),
    check: bool = typer.Option(True, help="Verify each image of a ShapeWorld prompt and print the verdict."),
):
    """Generate images (by default with the embedded ShapeWorld model)."""
    from ..generators.base import check_prompts
    from ..generators.sampling import generate_images
    from ..images import MAX_PIXELS, grid, save_png, to_tensor, to_uint8
    from ..world.records import RecordError, parse_prompt

    try:
        record = parse_prompt(prompt)
    except RecordError as e:
        if cfg.generator.partition(":")[0] == "shapeworld":
            fail(str(e))
        record = None  # another generator's prompt: nothing to verify
        try:
            check_prompts([prompt])
        except ValueError as e:
            fail(str(e))
    check_output_file(out, (".png",))
    gen, _ = load_sampler(cfg)
    cols, pad = min(n, 8), 2 if n > 1 else 0
    height, width = _image_size(gen)
    png_w, png_h = cols * (width + pad) * scale, -(-n // cols) * (height + pad) * scale
    if png_w * png_h > MAX_PIXELS:
        fail(f"the PNG would be {png_w}x{png_h} pixels, over {MAX_PIXELS}; lower -n or --scale")
    with progress_bar("generating", n) as advance:
        images = generate_images(gen, [prompt] * n, [seed + i for i in range(n)], steps=cfg.steps,
                                 guidance=cfg.guidance, progress=advance)
    arrays = to_uint8(images)
    save_png(arrays[0] if n == 1 else grid(arrays, cols), out, scale=scale)
    if check and record is not None:
        from ..rewards import load

        saved = to_tensor(arrays)  # what the PNG holds
        verdict = load("shapeworld", mode="partial")(saved, [prompt] * n, metadata=[record] * n)
        for i in range(n):
            correct, reason = bool(verdict.sub_scores["correct"][i]), verdict.reasons[i]
            console.print(f"seed {seed + i}: {'correct' if correct else 'incorrect'} "
                          f"(partial credit {float(verdict.scores[i]):.2f}){' — ' + reason if reason else ''}")
    console.print(f"wrote {out}")


def _image_size(gen) -> tuple[int, int]:
    """(height, width) of the images ``gen`` samples by default."""
    if getattr(gen, "height", None) and getattr(gen, "width", None):
        return gen.height, gen.width
    res = gen.model.config.resolution  # the ShapeWorld model
    return res, res


DEMO_PROMPTS = ["a photo of a circle", "a photo of two red circles", "a photo of a blue square",
                "a photo of a triangle left of a square", "a photo of a red circle and a blue square",
                "a photo of three triangles"]


@app.command()
@config_options(SampleConfig, files=False)
def demo(cfg: SampleConfig,
         out: Path = typer.Option(Path("outputs/demo"), help="Folder for the grid and evaluation."),
         per_tag: int = typer.Option(12, min=1, help="Eval records per tag for the quick GenEval table."),
         images_per_prompt: int = typer.Option(2, min=1, help="Images per eval record.")):
    """The main job on the embedded default: a sample grid and the base GenEval-style table."""
    from ..eval.geneval import DEMO_MARK, clear_output, format_summary, run_geneval, summarize
    from ..images import grid, save_png, to_uint8
    from ..world.prompts import prompt_set_path
    from ..world.records import first_per_tag, load_records
    from .evaluate import prepare_geneval_output

    check_output_dir(out)
    # the demo replaces its own last run, never a GenEval run it did not write
    earlier = prepare_geneval_output(out / "geneval", overwrite=(out / "geneval" / DEMO_MARK).exists())
    _, sample = load_sampler(cfg)
    clear_output(earlier)
    (out / "geneval").mkdir(parents=True, exist_ok=True)
    (out / "geneval" / DEMO_MARK).touch()
    prompts = [p for p in DEMO_PROMPTS for _ in range(8)]
    images = to_uint8(sample(prompts, list(range(len(prompts)))))
    save_png(grid(images, 8), out / "grid.png", scale=4)
    console.print(f"sample grid (rows: {'; '.join(DEMO_PROMPTS)}) → {out / 'grid.png'}")
    records = first_per_tag(load_records(prompt_set_path("eval")), per_tag)
    with progress_bar("base GenEval-style eval", len(records) * images_per_prompt) as advance:
        results = run_geneval(sample, None, records, images_per_prompt, out / "geneval", progress=advance)
    print(format_summary(summarize(results)))
