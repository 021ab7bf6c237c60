"""GenEval on real images without mmcv/mmdet: a transformers Mask2Former detects the objects and a
transformers CLIP names their colours. The decision rules follow GenEval's reference scorer
(github.com/djghosh13/geneval, ``evaluation/evaluate_images.py``).

Rules copied from the reference (``judge``; it is pure, so tests can run it on hand-built
detections):

* a detection counts when its score is above 0.3, or above 0.9 for ``counting`` prompts. Per class
  they are sorted by score (best first) and capped at 16. There is no NMS (the reference's
  ``max_overlap`` defaults to 1.0; ``judge(..., max_overlap=)`` below 1 runs the same greedy IoU
  suppression);
* ``include`` asks for at least ``count`` objects of the class. Colour and position are checked only
  on its ``count`` best-scored objects, and a position only against the objects matched by the
  target requirement. ``exclude`` asks for fewer than ``count``, so "three pizzas" (include 3,
  exclude 4) means exactly three;
* position: ``relative_position`` on boxes. The centre offset shrinks towards 0 on each axis by
  0.1 x the two boxes' summed sizes on that axis; divided by the unshrunk offset's length, an axis
  component below -0.5 or above 0.5 gives left of / right of, above / below;
* colour: zero-shot CLIP (``openai/clip-vit-large-patch14``, the same OpenAI ViT-L/14 weights as
  the reference's open_clip model) over red, orange, yellow, green, blue, purple, pink, brown,
  black, white. The templates are "a photo of a {c} {object}", "a photo of a {c}-colored
  {object}" and "a photo of a {c} object", their normalised embeddings averaged per colour. The
  image is the object's crop (its box, rounded as PIL's ``crop`` rounds) with everything off the
  object's mask painted #999 (153, 153, 153).

Detection follows mmdet's Mask2Former test path, not transformers' processor: resize keeping the
aspect ratio to a short side of 800 (long side at most 1333; ``size=`` changes the 800), bilinear,
ImageNet normalisation, padding to a multiple of 32. Post-processing is mmdet's
``MaskFormerFusionHead.instance_postprocess``: the top 100 (query, class) pairs, mask logits
upsampled bilinearly to the padded input, cropped, upsampled to the image, thresholded at 0. The
score is class probability x mean mask probability inside the mask, and the box is the mask's
extent. Class names are GenEval's 80 ``object_names.txt`` entries for an 80-class (COCO) model,
matched by index as the reference does ("computer mouse", "tv remote" and "computer keyboard" where
COCO says mouse/remote/keyboard). Any other model uses its ``id2label``.

Partial credit follows Flow-GRPO's GenEval reward (yifan123/reward-server,
``reward_server/gen_eval.py``, ``evaluate_reward``). For each ``include`` requirement, with n the
number of kept detections of its class:

* a count term ``1 - |count - n| / count``. Flow-GRPO lets this go negative; here it is clipped at 0;
* a colour term, (objects of the colour) / count;
* a position term, 1 if every pair holds, else 0.

Colour and position score 0 unless n equals the count exactly. The partial credit is the mean of
the terms. ``strict`` (Flow-GRPO's ``strict_correct``) holds when every term is 1. Flow-GRPO's
position bug is not copied: it appends a 1 after a failed position check as well as the 0.

How close the verdicts should be to the reference: given the same detections and colours, the rules
above give identical verdicts and reasons (the unit tests pin them on hand-built detections). On real
images the verdicts will still differ on some images, and the size of that gap has not been measured:
neither checkpoint could be run here. The main cause is the detector weights. The reference loads
OpenMMLab's mmdet-trained Swin-S checkpoint (``mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco``),
while ``facebook/mask2former-swin-small-coco-instance`` is converted from Meta's original detectron2
training: the same architecture and recipe, but a different training run, so scores near the 0.3
and 0.9 thresholds move (counting, at 0.9, is the most exposed, then two_object and position). Smaller
causes: the resize is done in torch on floats rather than by OpenCV on uint8 (rounding, not
geometry); CLIP crops are resized by torch rather than PIL (bicubic either way), which only flips
near-tie colours; and transformers' own processor and post-processing (a 384 x 384 resize,
nearest-neighbour masks) are deliberately not used. Expect most verdicts to agree and the overall
score to land near, but not exactly on, the reference's. Check against the reference on a few hundred
images before quoting results from this evaluator as GenEval numbers.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from ..rewards.base import Reward, RewardError, RewardOutput
from ..rewards.geneval import DEFAULT_CLIP, DEFAULT_DETECTOR  # noqa: F401  (defined once, with the reward)
from ..world.records import RELATIONS, TAGS, RecordError
from ..world.render import relative_position

THRESHOLD = 0.3  # detection score, every tag but counting
COUNTING_THRESHOLD = 0.9
MAX_OBJECTS = 16  # per class
MAX_OVERLAP = 1.0  # greedy NMS IoU; 1.0 = none (GenEval's default)
POSITION_THRESHOLD = 0.1
COLORS = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white")
COLOR_TEMPLATES = ("a photo of a {c} {obj}", "a photo of a {c}-colored {obj}", "a photo of a {c} object")
CROP_BACKGROUND = 153 / 255  # "#999"
TEST_SHORT, TEST_LONG, SIZE_DIVISOR = 800, 1333, 32  # mmdet's Mask2Former test scale
MAX_PER_IMAGE = 100  # (query, class) pairs kept by mmdet's instance post-processing
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
# GenEval's evaluation/object_names.txt: its names for COCO's 80 classes, in COCO's order
GENEVAL_OBJECTS = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "computer mouse", "tv remote",
    "computer keyboard", "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock",
    "vase", "scissors", "teddy bear", "hair drier", "toothbrush")


@dataclass(eq=False)  # compared by identity: masks are tensors
class Detection:
    """One detected instance. ``box`` is (x1, y1, x2, y2) in pixels, exclusive end, as mmdet's
    ``mask2bbox``. ``mask`` is a bool ``[H, W]`` tensor or None (then the colour crop is the plain
    box). ``color`` is filled in by CLIP, or by hand in tests."""

    cls: str
    score: float
    box: tuple[float, float, float, float]
    mask: torch.Tensor | None = None
    color: str | None = None


@dataclass(frozen=True)
class Verdict:
    correct: bool  # GenEval's verdict
    reason: str  # GenEval's reason lines ("" when correct)
    partial: float  # Flow-GRPO-style partial credit in [0, 1]
    strict: bool  # Flow-GRPO's strict_correct (exact counts)


# ---- records ----

def _count(req: dict[str, Any]) -> int:
    return req.get("count", 1)


def check_record(record: Any) -> dict[str, Any]:
    """GenEval's record structure, with any class names (real GenEval's are COCO's). Raises
    RecordError naming the problem."""
    if not isinstance(record, dict) or record.get("tag") not in TAGS:
        raise RecordError(f"not a GenEval record (a tag is one of {', '.join(TAGS)}): {record!r}")
    include, exclude = record.get("include"), record.get("exclude", [])
    if not isinstance(include, list) or not include or not isinstance(exclude, list):
        raise RecordError(f"record {record.get('prompt')!r} needs a non-empty 'include' list")
    for i, req in enumerate(include + exclude):
        _check_requirement(req, i if i < len(include) else 0)
    return record


def _check_requirement(req: Any, index: int) -> None:
    if not isinstance(req, dict) or not isinstance(req.get("class"), str) or not req["class"]:
        raise RecordError(f"a requirement needs a class name: {req!r}")
    count = _count(req)
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise RecordError(f"count {count!r} of {req['class']} must be a positive integer")
    if "color" in req and req["color"] not in COLORS:
        raise RecordError(f"unknown color {req['color']!r}; GenEval's are {', '.join(COLORS)}")
    pos = req.get("position")
    if pos is not None and not (isinstance(pos, (list, tuple)) and len(pos) == 2 and pos[0] in RELATIONS
                                and isinstance(pos[1], int) and 0 <= pos[1] < index):
        raise RecordError(f"bad position {pos!r}: expected [relation, earlier index], relation one of "
                          f"{', '.join(RELATIONS)}")


def load_geneval_records(path: str | Path) -> list[dict[str, Any]]:
    """A GenEval metadata JSONL (e.g. GenEval's ``prompts/evaluation_metadata.jsonl``), checked
    for structure only; errors name the file and line."""
    if Path(path).is_dir():
        raise RecordError(f"{path} is a folder, not a GenEval metadata JSONL file")
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise RecordError(f"{path} is not UTF-8 text (byte {e.start}: {e.reason})") from None
    records = []
    for lineno, line in enumerate(lines, 1):
        try:
            if line.strip():
                records.append(check_record(json.loads(line)))
                if not isinstance(records[-1].get("prompt"), str):
                    raise RecordError("record has no 'prompt'")
        except (json.JSONDecodeError, RecordError) as e:
            raise RecordError(f"{path}:{lineno}: {e}") from None
    if not records:
        raise RecordError(f"{path} holds no records")
    return records


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


@lru_cache(maxsize=8)
def _geneval_patterns(classes: tuple[str, ...]) -> list[tuple[str, re.Pattern]]:
    obj = "|".join(re.escape(c) for c in sorted(classes, key=len, reverse=True))
    plural = "|".join(re.escape(c + ("es" if c.endswith("s") else "s")) for c in sorted(classes, key=len, reverse=True))
    col, rel, num = "|".join(COLORS), "|".join(RELATIONS), "|".join(NUMBER_WORDS[2:])
    pats = [("color_attr", rf"an? ({col}) ({obj}) and an? ({col}) ({obj})"), ("colors", rf"an? ({col}) ({obj})"),
            ("position", rf"an? ({obj}) ({rel}) an? ({obj})"), ("two_object", rf"an? ({obj}) and an? ({obj})"),
            ("counting", rf"({num}) ({plural})"), ("single_object", rf"an? ({obj})")]
    return [(tag, re.compile("a photo of " + p)) for tag, p in pats]


def parse_geneval_prompt(prompt: str, classes: Sequence[str]) -> dict[str, Any] | None:
    """The record of a prompt written with GenEval's templates (``prompts/create_prompts.py``)
    over ``classes``, or None when it follows none of them."""
    text = " ".join(prompt.lower().strip().rstrip(".").split())
    for tag, pattern in _geneval_patterns(tuple(classes)):
        m = pattern.fullmatch(text)
        if m:
            return _record_from(tag, m.groups(), classes, prompt)
    return None


def _record_from(tag: str, g: tuple[str, ...], classes: Sequence[str], prompt: str) -> dict[str, Any]:
    one = lambda cls, **kw: {"class": cls, "count": 1, **kw}  # noqa: E731
    if tag == "color_attr":
        include = [one(g[1], color=g[0]), one(g[3], color=g[2])]
    elif tag == "colors":
        include = [one(g[1], color=g[0])]
    elif tag == "position":
        include = [one(g[2]), one(g[0], position=[g[1], 0])]
    elif tag == "counting":
        n = NUMBER_WORDS.index(g[0])
        cls = next(c for c in classes if g[1] == c + ("es" if c.endswith("s") else "s"))
        return {"tag": tag, "include": [{"class": cls, "count": n}], "exclude": [{"class": cls, "count": n + 1}],
                "prompt": prompt}
    else:
        include = [one(c) for c in g]
    return {"tag": tag, "include": include, "prompt": prompt}


# ---- the decision (pure) ----

def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """GenEval's ``compute_iou`` (inclusive pixel ends: +1)."""
    area = lambda x: max(x[2] - x[0] + 1, 0) * max(x[3] - x[1] + 1, 0)  # noqa: E731
    inter = area([max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])])
    union = area(a) + area(b) - inter
    return inter / union if union else 0.0


def keep_detections(detections: Sequence[Detection], tag: str, max_overlap: float = MAX_OVERLAP
                    ) -> dict[str, list[Detection]]:
    """GenEval's per-class filter: best score first, above the tag's threshold, at most 16, then
    greedy suppression of boxes overlapping a better one by ``max_overlap`` IoU or more (off at 1)."""
    threshold = COUNTING_THRESHOLD if tag == "counting" else THRESHOLD
    by_class: dict[str, list[Detection]] = {}
    for d in sorted(detections, key=lambda d: -d.score):
        if d.score > threshold:
            by_class.setdefault(d.cls, []).append(d)
    return {c: _suppress(objs[:MAX_OBJECTS], max_overlap) for c, objs in by_class.items()}


def _suppress(objs: list[Detection], max_overlap: float) -> list[Detection]:
    if max_overlap >= 1:
        return objs
    kept: list[Detection] = []
    for o in objs:
        if all(box_iou(k.box, o.box) < max_overlap for k in kept):
            kept.append(o)
    return kept


def colour_targets(record: dict[str, Any], kept: dict[str, list[Detection]]) -> list[Detection]:
    """The detections whose colour the decision reads: the ``count`` best of each class a
    requirement gives a colour, when there are that many."""
    out = []
    for req in record["include"]:
        objs = kept.get(req["class"], [])
        if "color" in req and len(objs) >= _count(req):
            out += [o for o in objs[:_count(req)] if o not in out]
    return out


def relations(box_a: Sequence[float], box_b: Sequence[float]) -> set[str]:
    """Where A is relative to B (GenEval's ``relative_position``, threshold 0.1)."""
    return relative_position(list(box_a[:4]), list(box_b[:4]), POSITION_THRESHOLD)[0]


def _color(obj: Detection) -> str:
    if obj.color is None:
        raise ValueError(f"the {obj.cls} detection has no colour: classify colour_targets() first")
    return obj.color


def _include_failure(req: dict[str, Any], found: list[Detection], groups: list) -> str:
    cls, count = req["class"], _count(req)
    if len(found) < count:
        return f"expected {cls}>={count}, found {len(found)}"
    if "color" in req:
        colors, want = [_color(o) for o in found], req["color"]
        if colors.count(want) < count:
            return (f"expected {want} {cls}>={count}, found {colors.count(want)} {want}; and "
                    + ", ".join(f"{colors.count(c)} {c}" for c in COLORS if c in colors))
    if "position" in req:
        rel, target = req["position"]
        if groups[target] is None:
            return f"no target for {cls} to be {rel}"
        for o in found:
            for t in groups[target]:
                found_rels = relations(o.box, t.box)
                if rel not in found_rels:
                    return f"expected {cls} {rel} target, found {' and '.join(sorted(found_rels))} target"
    return ""


def geneval_verdict(record: dict[str, Any], kept: dict[str, list[Detection]]) -> tuple[bool, str]:
    """GenEval's ``evaluate``: (correct, reason lines) for detections already filtered by
    ``keep_detections``."""
    reasons: list[str] = []
    groups: list[list[Detection] | None] = []
    for req in record["include"]:
        found = kept.get(req["class"], [])[:_count(req)]
        why = _include_failure(req, found, groups)
        groups.append(None if why else found)
        reasons += [why] if why else []
    for req in record.get("exclude", []):
        n = len(kept.get(req["class"], []))
        if n >= _count(req):
            reasons.append(f"expected {req['class']}<{_count(req)}, found {n}")
    return not reasons, "\n".join(reasons)


def flow_grpo_credit(record: dict[str, Any], kept: dict[str, list[Detection]]) -> tuple[float, bool]:
    """Partial credit and strict correctness as Flow-GRPO's GenEval reward computes them (see
    the module docstring): terms for count, colour and position per requirement."""
    terms: list[float] = []
    groups: list[list[Detection] | None] = []
    for req in record["include"]:
        objs, count = kept.get(req["class"], []), _count(req)
        terms.append(max(0.0, 1 - abs(count - len(objs)) / count))
        ok = len(objs) == count
        if "color" in req:
            n = sum(_color(o) == req["color"] for o in objs) if ok else 0
            terms.append(n / count)
            ok = ok and n == count
        if "position" in req:
            rel, target = req["position"]
            group = groups[target]
            ok = ok and group is not None and all(rel in relations(o.box, t.box) for o in objs for t in group)
            terms.append(float(ok))
        groups.append(objs if ok else None)
    return sum(terms) / len(terms), all(t == 1 for t in terms)


def judge(record: dict[str, Any], detections: Sequence[Detection], max_overlap: float = MAX_OVERLAP) -> Verdict:
    """GenEval's verdict and Flow-GRPO's partial credit for one image's detections (unfiltered:
    thresholds, ordering and the cap apply here). Detections the decision reads a colour from
    (``colour_targets``) must carry one."""
    kept = keep_detections(detections, record["tag"], max_overlap)
    correct, reason = geneval_verdict(record, kept)
    partial, strict = flow_grpo_credit(record, kept)
    return Verdict(correct, reason, partial, strict)


# ---- the models ----

def _from_pretrained(cls, source: str, what: str, hint: str, **kwargs):
    from ..utils import local_files_only

    try:
        return cls.from_pretrained(source, local_files_only=local_files_only(source), **kwargs)
    except OSError as e:
        local = Path(source).exists()
        raise FileNotFoundError(
            f"cannot load the {what} from {source!r}: "
            + (f"the folder is not a saved {cls.__name__}" if local else
               f"download it first (`hf download {source} --local-dir DIR`) and pass {hint}=DIR")
            + f" ({str(e).splitlines()[0]})") from None


def detector_classes(config) -> list[str]:
    """Class names by label id: GenEval's names for an 80-class (COCO) model, else ``id2label``."""
    if config.num_labels == len(GENEVAL_OBJECTS):
        return list(GENEVAL_OBJECTS)
    return [config.id2label[i] for i in range(config.num_labels)]


def _processor_stats(source: str) -> tuple[tuple, tuple, int]:
    """Mean, std and size divisor from a local folder's ``preprocessor_config.json`` (ImageNet
    statistics and 32 otherwise: what every Mask2Former conversion ships)."""
    path = Path(source) / "preprocessor_config.json"
    cfg = json.loads(path.read_text()) if path.is_file() else {}
    divisor = cfg.get("size_divisor") or cfg.get("size_divisibility") or SIZE_DIVISOR
    return tuple(cfg.get("image_mean", IMAGENET_MEAN)), tuple(cfg.get("image_std", IMAGENET_STD)), int(divisor)


def mask_boxes(masks: torch.Tensor) -> torch.Tensor:
    """mmdet's ``mask2bbox``: ``[N, H, W]`` bool → ``[N, 4]`` (x1, y1, last x + 1, last y + 1); zeros
    for an empty mask."""
    xs, ys = masks.any(1), masks.any(2)
    w, h = xs.shape[1], ys.shape[1]
    x1, y1 = xs.float().argmax(1), ys.float().argmax(1)
    x2, y2 = w - xs.flip(1).float().argmax(1), h - ys.flip(1).float().argmax(1)
    boxes = torch.stack([x1, y1, x2, y2], 1).float()
    return torch.where((xs.any(1) & ys.any(1))[:, None], boxes, torch.zeros_like(boxes))


class Mask2FormerDetector:
    """A transformers Mask2Former instance-segmentation model run as mmdet runs GenEval's
    detector (see the module docstring): images ``[B,3,H,W]`` in [0, 1] → detections per image,
    with masks at image size."""

    def __init__(self, source: str = DEFAULT_DETECTOR, device: str = "cpu", size: int = TEST_SHORT):
        from transformers import Mask2FormerForUniversalSegmentation

        self.model = _from_pretrained(Mask2FormerForUniversalSegmentation, source, "Mask2Former detector",
                                      "detector").eval().requires_grad_(False).to(device)
        self.names = detector_classes(self.model.config)
        mean, std, self.divisor = _processor_stats(source)
        self.mean, self.std = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
        self.size, self.max_size = size, round(size * TEST_LONG / TEST_SHORT)

    def preprocess(self, images: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """mmdet's test pipeline: keep-ratio resize (bilinear, 8-bit), normalise, pad to the divisor."""
        h, w = images.shape[-2:]
        scale = min(self.max_size / max(h, w), self.size / min(h, w))
        nh, nw = int(h * scale + 0.5), int(w * scale + 0.5)
        x = F.interpolate(images * 255, size=(nh, nw), mode="bilinear", align_corners=False).round().clamp(0, 255)
        x = (x / 255 - self.mean.to(x)) / self.std.to(x)
        ph, pw = -(-nh // self.divisor) * self.divisor, -(-nw // self.divisor) * self.divisor
        return F.pad(x, (0, pw - nw, 0, ph - nh)), (nh, nw)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> list[list[Detection]]:
        device = next(self.model.parameters()).device
        pixels, resized = self.preprocess(images.to(device).float())
        out = self.model(pixel_values=pixels)
        return [self.instances(c, m, pixels.shape[-2:], resized, images.shape[-2:])
                for c, m in zip(out.class_queries_logits, out.masks_queries_logits)]

    def instances(self, logits, masks, padded, resized, original) -> list[Detection]:
        """mmdet's instance post-processing for one image, keeping only scores above 0.3 (no rule
        reads the others); the masks of pairs whose class probability is not above 0.3, which bounds
        the score, are never computed."""
        probs = logits.softmax(-1)[:, :-1]
        top, index = probs.flatten().topk(min(MAX_PER_IMAGE, probs.numel()))
        top, index = top[top > THRESHOLD], index[top > THRESHOLD]
        if not len(index):
            return []
        mask_logits = F.interpolate(masks[index // probs.shape[1]][None], size=tuple(padded), mode="bilinear",
                                    align_corners=False)[:, :, :resized[0], :resized[1]]
        mask_logits = F.interpolate(mask_logits, size=tuple(original), mode="bilinear", align_corners=False)[0]
        binary = mask_logits > 0
        mask_score = (mask_logits.sigmoid() * binary).flatten(1).sum(1) / (binary.flatten(1).sum(1) + 1e-6)
        scores, boxes, binary = (top * mask_score).tolist(), mask_boxes(binary).tolist(), binary.cpu()
        return [Detection(self.names[int(k) % probs.shape[1]], s, tuple(b), m)
                for k, s, b, m in zip(index.tolist(), scores, boxes, binary) if s > THRESHOLD]


def object_crop(image: torch.Tensor, obj: Detection) -> torch.Tensor:
    """GenEval's colour crop of ``image`` ``[3, H, W]``: off-mask pixels #999, cut to the box
    (rounded like PIL's ``crop``; at least one pixel)."""
    if obj.mask is not None:
        image = torch.where(obj.mask.to(image.device)[None], image, torch.full_like(image, CROP_BACKGROUND))
    h, w = image.shape[-2:]
    x1, y1, x2, y2 = (round(v) for v in obj.box[:4])
    x1, y1 = min(max(x1, 0), w - 1), min(max(y1, 0), h - 1)
    return image[:, y1:max(min(y2, h), y1 + 1), x1:max(min(x2, w), x1 + 1)]


class ColourClassifier:
    """Zero-shot CLIP over GenEval's ten colours, with GenEval's three templates per object class."""

    def __init__(self, source: str = DEFAULT_CLIP, device: str = "cpu"):
        from ..rewards.clip import load_clip

        self.model, self.tokenizer = load_clip(source, device=device)
        self.size = self.model.config.vision_config.image_size
        self._text: dict[str, torch.Tensor] = {}

    def text_weights(self, obj: str) -> torch.Tensor:
        """``[10, D]``: per colour, the mean of the templates' unit embeddings, renormalised."""
        from ..rewards.clip import _features

        if obj not in self._text:
            texts = [t.format(c=c, obj=obj) for c in COLORS for t in COLOR_TEMPLATES]
            device = next(self.model.parameters()).device
            tokens = self.tokenizer(texts, padding=True, truncation=True, return_tensors="pt").to(device)
            emb = F.normalize(_features(self.model.get_text_features(**tokens)), dim=-1)
            self._text[obj] = F.normalize(emb.view(len(COLORS), len(COLOR_TEMPLATES), -1).mean(1), dim=-1)
        return self._text[obj]

    @torch.no_grad()
    def __call__(self, image: torch.Tensor, objects: Sequence[Detection], obj: str) -> list[str]:
        from ..rewards.clip import _features, clip_pixels

        device = next(self.model.parameters()).device
        crops = torch.cat([clip_pixels(object_crop(image, o)[None].to(device), self.size) for o in objects])
        feats = F.normalize(_features(self.model.get_image_features(pixel_values=crops)), dim=-1)
        return [COLORS[i] for i in (feats @ self.text_weights(obj).T).argmax(-1).tolist()]


class GenEvalReward(Reward):
    """GenEval's verdict on real images as a reward: ``binary`` (GenEval's correct) or ``partial``
    (Flow-GRPO's partial credit). Sub-scores: ``correct``, ``partial``, ``strict``. Reasons are
    GenEval's. Records come from ``metadata`` (GenEval's dicts or their JSON strings) or are parsed
    from prompts written with GenEval's templates over the detector's classes (ShapeWorld's
    templates as a fallback)."""

    name = "geneval"

    def __init__(self, detector: str = DEFAULT_DETECTOR, clip: str = DEFAULT_CLIP, mode: str = "binary",
                 device: str = "cpu", size: int = TEST_SHORT, batch_size: int = 8):
        if mode not in ("binary", "partial"):
            raise ValueError(f"mode must be 'binary' or 'partial', got {mode!r}")
        self.mode, self.batch_size = mode, max(1, int(batch_size))
        self.detector = Mask2FormerDetector(detector, device, int(size))
        self.colours = ColourClassifier(clip, device)

    def record(self, prompt: str, meta: Any) -> dict[str, Any]:
        """The checked record of one image; RewardError when there is none to be had."""
        try:
            if meta is None:
                meta = parse_geneval_prompt(prompt, self.detector.names) or _shapeworld_record(prompt)
            record = check_record(json.loads(meta) if isinstance(meta, str) else meta)
        except (RecordError, json.JSONDecodeError) as e:
            raise RewardError(f"geneval needs GenEval records (pass them as metadata): {e}") from None
        unknown = {r["class"] for r in record["include"] + record.get("exclude", [])} - set(self.detector.names)
        if unknown:
            raise RewardError(f"the detector knows no {', '.join(sorted(unknown))} (record {record.get('prompt')!r}); "
                              f"it knows {', '.join(self.detector.names[:8])}, ...")
        return record

    def verdict(self, image: torch.Tensor, detections: list[Detection], record: dict[str, Any]) -> Verdict:
        targets = colour_targets(record, keep_detections(detections, record["tag"]))
        for cls in dict.fromkeys(o.cls for o in targets):
            objs = [o for o in targets if o.cls == cls]
            for o, c in zip(objs, self.colours(image, objs, cls)):
                o.color = c
        return judge(record, detections)

    def score(self, images, prompts, metadata):
        records = [self.record(p, metadata[i] if metadata is not None else None) for i, p in enumerate(prompts)]
        images = images.detach().float().clamp(0, 1).mul(255).round().div(255).cpu()  # the 8-bit image, as read
        verdicts: list[Verdict] = []
        for start in range(0, len(images), self.batch_size):
            chunk = images[start:start + self.batch_size]
            for k, dets in enumerate(self.detector(chunk)):
                verdicts.append(self.verdict(chunk[k], dets, records[start + k]))
        c = torch.tensor([float(v.correct) for v in verdicts])
        p = torch.tensor([v.partial for v in verdicts])
        s = torch.tensor([float(v.strict) for v in verdicts])
        return RewardOutput(c if self.mode == "binary" else p, {"correct": c, "partial": p, "strict": s},
                            reasons=[v.reason for v in verdicts])


def _shapeworld_record(prompt: str) -> dict[str, Any]:
    from ..world.records import parse_prompt

    try:
        return parse_prompt(prompt)
    except RecordError:
        raise RecordError(f"cannot read prompt {prompt!r}: it follows none of GenEval's templates "
                          f"(e.g. 'a photo of a dog left of a cat', 'a photo of three pizzas')") from None
