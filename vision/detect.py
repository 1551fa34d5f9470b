"""Object detection for search: candidate boxes, and the choice of the box to search with.

The search pipeline crops the query photo to one box before embedding it. Detectors give
candidates; :func:`detect_with_whole_image` always adds the whole image as a candidate (as
PaddleClas PP-ShiTu does), so a photo where nothing is detected is still searchable; and
:func:`choose_box` picks one by centrality, detector score and size. A box given by the
caller overrides the choice; :func:`validate_box` checks such a box.

Detectors:

- ``nanodet`` (default): NanoDet COCO, the TorchScript file made by ``python -m
  vision.weights`` (traced at 416x416), re-planned for the CPU when loaded
  (:func:`vision.nanodet_cpu.optimize_for_cpu`) and run at :data:`NANODET_INPUT_SIZE` (384).
  At 416 px it is 2.1 GMAC: 66-70 ms of CPU per photo as traced, ~55 ms re-planned, on one
  thread of these 2-core AVX2 machines (quiet); its convolutions alone need ~46 ms at peak.
  At 384 px: ~0.85 of that.
- ``fasterrcnn_mobilenet_v3_large_320_fpn``, ``fasterrcnn_resnet50_fpn``,
  ``maskrcnn_resnet50_fpn``: torchvision's models, when their checkpoints are in the torch
  hub cache (copied there by hand: nothing is downloaded).
- ``ssd_oidv4``: SSD-MobileNetV2 Open Images v4 (23 product-like classes), a TFLite file
  run with ai-edge-litert (:mod:`vision.detect_ssd`): ~21 ms of CPU per 1024-px photo on one
  thread (the TFLite invoke ~19 ms, the resize ~2.5 ms), against ~72 ms for NanoDet in the
  same run. Few of its classes are groceries: on the Grocery Store photos it boxes cartons
  and bottles ("bottle") and little else.
- ``none``: no detector; only the whole-image candidate.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from PIL import Image

from vision import nanodet, nanodet_cpu
from vision.weights import WeightsUnavailable, nanodet_path, torchvision_checkpoint

WHOLE_IMAGE_LABEL = "image"
USER_LABEL = "user"
DETECTOR_NAMES = (
    "nanodet",
    "fasterrcnn_mobilenet_v3_large_320_fpn",
    "fasterrcnn_resnet50_fpn",
    "maskrcnn_resnet50_fpn",
    "ssd_oidv4",
    "none",
)


# NanoDet's output layout (see vision/nanodet.py): class maps then box maps at these strides.
NANODET_STRIDES = (8, 16, 32)
# The side of the square NanoDet sees. The file is traced at nanodet.INPUT_SIZE = 416; the
# re-planned model runs at any multiple of 32. 384 costs 0.85 of 416's compute (~8 ms of
# CPU per photo), which the search's 80 ms budget for detect + embed on one thread needs.
# Measured against 416 (Grocery Store, 296 queries): recall@1/5/10 0.622/0.922/0.976 vs
# 0.622/0.919/0.976 (catalog + reviews), 0.368/0.696/0.831 vs 0.358/0.703/0.838 (catalog
# only); the box chosen on the 81 catalog photos has IoU > 0.7 with the product in 63 vs 66
# (14 photos change, 8 for the worse, 5 for the better: detections near the 0.3 score
# threshold come and go). 352 and 320 lose more boxes: 56 and 52 of 81.
NANODET_INPUT_SIZE = 384
NANODET_REG_BINS = 11  # GFL: distances 0..10 strides, one logit per integer distance

# The 80 COCO classes in the order of the class-score maps' last axis.
COCO_CLASSES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant",
    "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
)  # fmt: skip
assert len(COCO_CLASSES) == 80


@dataclass(frozen=True)
class Box:
    """An axis-aligned box in pixels of the image it was found in (x2, y2 exclusive)."""

    x1: float
    y1: float
    x2: float
    y2: float
    score: float
    label: str

    @property
    def area(self) -> float:
        return max(0.0, self.x2 - self.x1) * max(0.0, self.y2 - self.y1)

    def as_tuple(self) -> tuple[float, float, float, float]:
        return (self.x1, self.y1, self.x2, self.y2)

    def scaled(self, fx: float, fy: float) -> Box:
        """The same box in an image resized by ``fx`` x ``fy``."""
        return Box(self.x1 * fx, self.y1 * fy, self.x2 * fx, self.y2 * fy, self.score, self.label)

    def clip(self, width: float, height: float) -> Box:
        return Box(
            min(max(self.x1, 0.0), width),
            min(max(self.y1, 0.0), height),
            min(max(self.x2, 0.0), width),
            min(max(self.y2, 0.0), height),
            self.score,
            self.label,
        )

    def iou(self, other: Box) -> float:
        iw = min(self.x2, other.x2) - max(self.x1, other.x1)
        ih = min(self.y2, other.y2) - max(self.y1, other.y1)
        inter = max(0.0, iw) * max(0.0, ih)
        union = self.area + other.area - inter
        return inter / union if union > 0 else 0.0


def whole_image_box(width: int, height: int) -> Box:
    # Score 0: nothing detected it. choose_box still lets it win on centrality and area
    # when the detections are weak, off-centre or small.
    return Box(0.0, 0.0, float(width), float(height), 0.0, WHOLE_IMAGE_LABEL)


class Detector(Protocol):
    name: str

    def detect(self, image: Image.Image) -> list[Box]:
        """Boxes in ``image``'s pixels, best first, without the whole-image candidate."""
        ...


def detect_with_whole_image(detector: Detector, image: Image.Image) -> list[Box]:
    """The detector's boxes followed by the whole-image candidate, which is always there."""
    return [*detector.detect(image), whole_image_box(*image.size)]


def nms(boxes: Sequence[Box], iou_threshold: float, max_boxes: int | None = None) -> list[Box]:
    """Class-agnostic non-maximum suppression: best first, overlaps above the threshold dropped."""
    if not boxes:
        return []
    from torchvision.ops import nms as tv_nms

    coords = torch.tensor([b.as_tuple() for b in boxes], dtype=torch.float32)
    scores = torch.tensor([b.score for b in boxes], dtype=torch.float32)
    keep = tv_nms(coords, scores, iou_threshold).tolist()
    return [boxes[i] for i in keep[:max_boxes]]


# ----------------------------------------------------------------------------------------
# Box choice


@dataclass(frozen=True)
class BoxChoice:
    """Weights of :func:`choose_box`'s score, and which detections may take part.

    score = w_center * centrality + w_score * detector score + w_area * area fraction,
    centrality = 1 at the image centre, 0 at a corner. With the defaults the whole image
    (centrality 1, area 1, score 0) scores 0.5, so a detection must be fairly confident and
    central to beat it: e.g. score 0.45, centre at 10% of the half-diagonal, 30% of the area.
    Measured with NanoDet on the 81 Grocery Store catalog photos (one product on white):
    the chosen box has IoU > 0.7 with the product's pixels in 81% of them (median 0.89);
    the top-scoring detection alone in 62% (median 0.86). At 384 px (the default input
    since): 78% (median 0.90) and 65% (median 0.88).
    """

    w_center: float = 0.3
    w_score: float = 0.5
    w_area: float = 0.2
    min_score: float = 0.3  # detections below this are not candidates
    min_area: float = 0.01  # nor are boxes under 1% of the image (a label, a price tag)


def choose_box(boxes: Sequence[Box], width: int, height: int, weights: BoxChoice = BoxChoice()) -> int:
    """Index in ``boxes`` of the box to search with; ties go to the earlier box.

    Raises ValueError if no box is eligible (pass the whole-image candidate to avoid that).
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    cx, cy, half_diagonal = width / 2, height / 2, math.hypot(width, height) / 2
    best, best_score = -1, -math.inf
    for i, box in enumerate(boxes):
        clipped = box.clip(width, height)
        area = clipped.area / (width * height)
        if box.label != WHOLE_IMAGE_LABEL and (box.score < weights.min_score or area < weights.min_area):
            continue
        distance = math.hypot((clipped.x1 + clipped.x2) / 2 - cx, (clipped.y1 + clipped.y2) / 2 - cy)
        centrality = 1.0 - distance / half_diagonal
        score = weights.w_center * centrality + weights.w_score * box.score + weights.w_area * area
        if score > best_score:
            best, best_score = i, score
    if best < 0:
        raise ValueError("no eligible box to choose from")
    return best


def validate_box(box: Sequence[float], width: int, height: int) -> Box:
    """Check a caller-given (x1, y1, x2, y2) box against the image; return it as a :class:`Box`.

    Raises ValueError with a message fit for an API response.
    """
    if len(box) != 4:
        raise ValueError(f"a box is 4 numbers x1, y1, x2, y2; got {len(box)}")
    try:
        x1, y1, x2, y2 = (float(v) for v in box)
    except (TypeError, ValueError):
        raise ValueError("box coordinates must be numbers") from None
    if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
        raise ValueError("box coordinates must be finite numbers")
    if x2 <= x1 or y2 <= y1:
        raise ValueError(f"the box ({x1:g}, {y1:g}, {x2:g}, {y2:g}) is empty or inverted: need x1 < x2 and y1 < y2")
    if x1 < 0 or y1 < 0 or x2 > width or y2 > height:
        raise ValueError(f"the box ({x1:g}, {y1:g}, {x2:g}, {y2:g}) is outside the {width}x{height} image")
    return Box(x1, y1, x2, y2, 1.0, USER_LABEL)


# ----------------------------------------------------------------------------------------
# NanoDet output decoding (GFL)


def decode_nanodet(
    outputs: Sequence[torch.Tensor], input_size: int = nanodet.INPUT_SIZE, cells: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The converted model's six maps -> (boxes [N, 4] x1, y1, x2, y2 in input pixels, scores [N, 80]).

    GFL regression: each side's 11 logits are a distribution over distances 0..10 (in
    strides) from the cell centre ``(i + 0.5) * stride``; the expected distance is used.
    ``cells`` (indices into the N cells of all levels, stride 8 first) decodes only those
    boxes, in that order; the scores are always all N rows.
    """
    if len(outputs) != 6:
        raise ValueError(f"expected 6 NanoDet outputs, got {len(outputs)}")
    scores = torch.cat([o[0] for o in outputs[:3]], dim=0)
    bins = torch.arange(NANODET_REG_BINS, dtype=torch.float32)
    if cells is not None:
        order = torch.argsort(cells)
        cells = cells[order]
    boxes, first = [], 0
    for reg, stride in zip(outputs[3:], NANODET_STRIDES):
        side = input_size // stride
        assert reg.shape == (1, side * side, 4 * NANODET_REG_BINS), f"unexpected box map shape {tuple(reg.shape)}"
        index = torch.arange(side * side)
        if cells is not None:  # this level's share of the wanted cells
            index = cells[(cells >= first) & (cells < first + side * side)] - first
        first += side * side
        logits = reg[0][index].reshape(-1, 4, NANODET_REG_BINS)
        dist = (logits.softmax(dim=-1) @ bins) * stride  # [n, 4] l, t, r, b
        cy, cx = (torch.div(index, side, rounding_mode="floor") + 0.5) * stride, (index % side + 0.5) * stride
        boxes.append(torch.stack([cx - dist[:, 0], cy - dist[:, 1], cx + dist[:, 2], cy + dist[:, 3]], dim=1))
    coords = torch.cat(boxes, dim=0)
    if cells is not None:  # back to the order asked for
        coords = torch.empty_like(coords).index_copy_(0, order, coords)
    return coords, scores


# ----------------------------------------------------------------------------------------
# Detectors


class NanoDetDetector:
    """NanoDet COCO from the set-up TorchScript file; the model is loaded once per instance."""

    name = "nanodet"

    def __init__(
        self,
        path: Path | None = None,
        *,
        score_threshold: float = 0.3,
        iou_threshold: float = 0.6,
        max_boxes: int = 10,
        letterbox: bool = True,
        input_size: int | None = None,
        model: Callable[[torch.Tensor], tuple[torch.Tensor, ...]] | None = None,
    ) -> None:
        # ``model`` stands in for the TorchScript file (tests; an already loaded copy). The
        # file's graph is re-planned for CPU inference: same maps, ~4/5 of the time.
        if model is None:
            model = nanodet_cpu.optimize_for_cpu(nanodet.load_torchscript(path or nanodet_path()))
        # Only the re-planned model runs at other sizes than the one the file was traced at.
        flexible = getattr(model, "any_size", False)
        if input_size is None:
            input_size = NANODET_INPUT_SIZE if flexible else nanodet.INPUT_SIZE
        if input_size % max(NANODET_STRIDES) or (input_size != nanodet.INPUT_SIZE and not flexible):
            raise ValueError(f"NanoDet cannot run at {input_size} px (a multiple of 32, with the re-planned model)")
        self.model = model
        self.input_size = input_size
        self.score_threshold = score_threshold
        self.iou_threshold = iou_threshold
        self.max_boxes = max_boxes
        self.letterbox = letterbox

    def detect(self, image: Image.Image) -> list[Box]:
        size = self.input_size
        tensor, scale, (pad_x, pad_y) = _to_square(image, size, self.letterbox)
        with torch.inference_mode():
            outputs = self.model(tensor)
            best, labels = torch.cat([o[0] for o in outputs[:3]], dim=0).max(dim=1)
            keep = torch.nonzero(best >= self.score_threshold).flatten()
            coords, _ = decode_nanodet(outputs, size, cells=keep)  # only the boxes kept
        sx, sy = scale
        coords = (coords - torch.tensor([pad_x, pad_y, pad_x, pad_y])) / torch.tensor([sx, sy, sx, sy])
        boxes = [
            Box(*c, score=s, label=COCO_CLASSES[k]).clip(*image.size)
            for c, s, k in zip(coords.tolist(), best[keep].tolist(), labels[keep].tolist())
        ]
        return nms(boxes, self.iou_threshold, self.max_boxes)


# PIL box-reduces by an integer factor first, then resamples the rest: 5 ms instead of
# 8 ms for a 1024-px photo (one thread), with no visible change at detector resolution.
_REDUCING_GAP = 1.0


def _to_square(
    image: Image.Image, size: int, letterbox: bool
) -> tuple[torch.Tensor, tuple[float, float], tuple[int, int]]:
    """RGB 0..1 tensor [1, 3, size, size], the x/y scale applied, and the x/y padding.

    The tensor is channels-last (NHWC in memory), the layout the re-planned model
    (:class:`vision.nanodet_cpu.CpuNanoDet`) runs in: PIL's pixels permuted, not transposed in memory.
    """
    if image.mode != "RGB":
        image = image.convert("RGB")
    w, h = image.size
    if letterbox:
        s = size / max(w, h)
        new_w, new_h = max(1, round(w * s)), max(1, round(h * s))
        pad_x, pad_y = (size - new_w) // 2, (size - new_h) // 2
        canvas = image.resize((new_w, new_h), Image.Resampling.BILINEAR, reducing_gap=_REDUCING_GAP)
        if canvas.size != (size, size):
            # Pad with the model's mean colour, which its normalisation maps to (about) 0:
            # the same as the zero padding its convolutions see at the borders.
            resized = canvas
            canvas = Image.new("RGB", (size, size), tuple(round(c) for c in nanodet.BGR_MEAN[::-1]))
            canvas.paste(resized, (pad_x, pad_y))
        scale = (new_w / w, new_h / h)
    else:
        canvas = image.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=_REDUCING_GAP)
        pad_x = pad_y = 0
        scale = (size / w, size / h)
    pixels = torch.from_numpy(np.array(canvas, dtype=np.uint8)).permute(2, 0, 1).unsqueeze(0)
    return pixels.float().div_(255.0), scale, (pad_x, pad_y)


def _torchvision_builders() -> dict[str, tuple[Callable[..., Any], Any]]:
    from torchvision.models import detection as d

    return {
        "fasterrcnn_mobilenet_v3_large_320_fpn": (
            d.fasterrcnn_mobilenet_v3_large_320_fpn,
            d.FasterRCNN_MobileNet_V3_Large_320_FPN_Weights.COCO_V1,
        ),
        "fasterrcnn_resnet50_fpn": (d.fasterrcnn_resnet50_fpn, d.FasterRCNN_ResNet50_FPN_Weights.COCO_V1),
        "maskrcnn_resnet50_fpn": (d.maskrcnn_resnet50_fpn, d.MaskRCNN_ResNet50_FPN_Weights.COCO_V1),
    }


class TorchvisionDetector:
    """torchvision's COCO detectors, from checkpoints already in the torch hub cache."""

    def __init__(
        self, name: str, *, score_threshold: float = 0.3, iou_threshold: float = 0.6, max_boxes: int = 10
    ) -> None:
        builders = _torchvision_builders()
        if name not in builders:
            raise ValueError(f"unknown torchvision detector {name!r}; known: {', '.join(builders)}")
        build, weights = builders[name]
        torchvision_checkpoint(weights)  # raises WeightsUnavailable rather than downloading
        self.name = name
        self.model = build(weights=weights, box_score_thresh=score_threshold).eval()
        self.categories: list[str] = list(weights.meta["categories"])
        self.iou_threshold = iou_threshold
        self.max_boxes = max_boxes

    def detect(self, image: Image.Image) -> list[Box]:
        pixels = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0).permute(2, 0, 1)
        with torch.inference_mode():
            found = self.model([pixels])[0]
        boxes = [
            Box(*c, score=s, label=self.categories[k]).clip(*image.size)
            for c, s, k in zip(found["boxes"].tolist(), found["scores"].tolist(), found["labels"].tolist())
        ]
        return nms(boxes, self.iou_threshold, self.max_boxes)


class NoDetector:
    """No detection: search always uses the whole image (or the caller's box)."""

    name = "none"

    def detect(self, image: Image.Image) -> list[Box]:
        return []


def make_detector(name: str = "nanodet", **options: Any) -> Detector:
    """Build a detector by name (:data:`DETECTOR_NAMES`); ``options`` go to its constructor.

    Raises :class:`~vision.weights.WeightsUnavailable` when its weights are not set up.
    """
    if name == "nanodet":
        return NanoDetDetector(**options)
    if name == "none":
        return NoDetector()
    if name == "ssd_oidv4":
        from vision.detect_ssd import SsdOidv4Detector  # imports ai_edge_litert only when used

        return SsdOidv4Detector(**options)
    if name in DETECTOR_NAMES:
        return TorchvisionDetector(name, **options)
    raise ValueError(f"unknown detector {name!r}; choose from {', '.join(DETECTOR_NAMES)}")


__all__ = [
    "COCO_CLASSES",
    "DETECTOR_NAMES",
    "NANODET_REG_BINS",
    "NANODET_STRIDES",
    "Box",
    "BoxChoice",
    "Detector",
    "NanoDetDetector",
    "NoDetector",
    "TorchvisionDetector",
    "WeightsUnavailable",
    "choose_box",
    "decode_nanodet",
    "detect_with_whole_image",
    "make_detector",
    "nms",
    "validate_box",
    "whole_image_box",
]
