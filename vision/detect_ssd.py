"""``ssd_oidv4``: SSD-MobileNetV2 trained on Open Images v4 (23 product-like classes).

The TFLite file from MediaPipe Objectron's npm package (``python -m vision.weights
ssd_oidv4``), run with ``ai-edge-litert`` on one thread. The file holds the network only:
it outputs raw box encodings [1, 1917, 4] and class logits [1, 1917, 24] (class 0 is the
background); anchor generation, box decoding, sigmoid and NMS are done here, as MediaPipe's
``SsdAnchorsCalculator`` and ``TensorsToDetectionsCalculator`` do (and the TensorFlow Object
Detection API's ``ssd_anchor_generator`` + ``faster_rcnn_box_coder`` it was trained with).

Input: the whole image resized (no letterbox, aspect ratio not kept) to 300x300 RGB, scaled
to [-1, 1]. Boxes come out normalised to the image, so they map back to any image size by
multiplying by its width and height.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from PIL import Image

from vision.detect import Box, nms
from vision.weights import ssd_oidv4_paths

SSD_INPUT_SIZE = 300
SSD_NUM_ANCHORS = 1917

# Anchor configuration of the model (MediaPipe's object_detection_oidv4 subgraph, the same as
# the TF OD API's ssd_anchor_generator for ssd_mobilenet_v2 at 300 px).
SSD_STRIDES = (16, 32, 64, 128, 256, 512)  # feature maps 19, 10, 5, 3, 2, 1 (ceil(300 / stride))
SSD_MIN_SCALE = 0.2
SSD_MAX_SCALE = 0.95
SSD_ASPECT_RATIOS = (1.0, 2.0, 0.5, 3.0, 0.3333)
# Box coder: encodings are (ty, tx, th, tw) divided by these scales.
SSD_BOX_SCALES = (10.0, 10.0, 5.0, 5.0)  # y, x, h, w


def ssd_anchors(
    input_size: int = SSD_INPUT_SIZE,
    strides: tuple[int, ...] = SSD_STRIDES,
    min_scale: float = SSD_MIN_SCALE,
    max_scale: float = SSD_MAX_SCALE,
    aspect_ratios: tuple[float, ...] = SSD_ASPECT_RATIOS,
) -> np.ndarray:
    """Anchors [N, 4] as (y_center, x_center, height, width), normalised to the input (0..1).

    Layer i of L has scale s_i = min + (max - min) * i / (L - 1) (0.2, 0.35, ..., 0.95;
    s_L = 1) and a feature map of ceil(input / stride_i) cells a side. Each cell, row-major,
    has its anchors centred at ((x + 0.5) / side, (y + 0.5) / side):

    - the lowest layer ("reduce_boxes_in_lowest_layer"): 3 anchors, (scale 0.1, ratio 1),
      (s_0, ratio 2), (s_0, ratio 0.5);
    - every other layer: one per aspect ratio r at s_i, then one of ratio 1 at
      sqrt(s_i * s_{i+1}): 6 anchors;

    an anchor of scale s and ratio r (width / height) is s * sqrt(r) wide and s / sqrt(r)
    high. 300 px: 19*19*3 + (10*10 + 5*5 + 3*3 + 2*2 + 1) * 6 = 1083 + 834 = 1917.
    """
    layers = len(strides)
    scales = [min_scale + (max_scale - min_scale) * i / (layers - 1) for i in range(layers)] + [1.0]
    out = []
    for i, stride in enumerate(strides):
        if i == 0:
            shapes = [(0.1, 1.0), (scales[0], 2.0), (scales[0], 0.5)]
        else:
            shapes = [(scales[i], r) for r in aspect_ratios] + [(math.sqrt(scales[i] * scales[i + 1]), 1.0)]
        hw = np.array([(s / math.sqrt(r), s * math.sqrt(r)) for s, r in shapes], dtype=np.float32)  # [A, 2]
        side = math.ceil(input_size / stride)
        centres = (np.arange(side, dtype=np.float32) + 0.5) / side
        cy, cx = np.meshgrid(centres, centres, indexing="ij")  # [side, side], row-major cells
        grid = np.stack([cy, cx], axis=-1).reshape(-1, 1, 2)  # [cells, 1, 2]
        cells = np.concatenate(
            [np.broadcast_to(grid, (grid.shape[0], len(shapes), 2)), np.broadcast_to(hw, (grid.shape[0], *hw.shape))],
            axis=-1,
        )
        out.append(cells.reshape(-1, 4))
    return np.concatenate(out, axis=0).astype(np.float32)


def decode_ssd_boxes(encodings: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """Box encodings [N, 4] (ty, tx, th, tw) -> boxes [N, 4] (x1, y1, x2, y2), normalised.

    Faster R-CNN box coder: centre = anchor centre + t / 10 * anchor size,
    size = anchor size * exp(t / 5).
    """
    ya, xa, ha, wa = anchors.T
    ty, tx, th, tw = (encodings / np.asarray(SSD_BOX_SCALES, dtype=np.float32)).T
    yc, xc = ty * ha + ya, tx * wa + xa
    h, w = np.exp(th) * ha, np.exp(tw) * wa
    return np.stack([xc - w / 2, yc - h / 2, xc + w / 2, yc + h / 2], axis=1)


def _load_interpreter(path: Path):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=1)
    interpreter.allocate_tensors()
    return interpreter


class SsdOidv4Detector:
    """The OIDv4 SSD from the set-up TFLite file; the interpreter is made once per instance.

    The interpreter is not thread-safe: use one detector per thread (gunicorn workers are
    processes, each with its own).
    """

    name = "ssd_oidv4"

    def __init__(
        self,
        path: Path | None = None,
        labels: list[str] | None = None,
        *,
        score_threshold: float = 0.3,
        iou_threshold: float = 0.6,
        max_boxes: int = 10,
    ) -> None:
        if path is None:
            path, labels_path = ssd_oidv4_paths()
            if labels is None:
                labels = json.loads(labels_path.read_text())["labels"]
        self.interpreter = _load_interpreter(path)
        (inp,) = self.interpreter.get_input_details()
        outputs = {d["name"]: d["index"] for d in self.interpreter.get_output_details()}
        if tuple(inp["shape"]) != (1, SSD_INPUT_SIZE, SSD_INPUT_SIZE, 3):
            raise ValueError(f"unexpected SSD input shape {tuple(inp['shape'])}")
        self._input = inp["index"]
        self._boxes = outputs["raw_outputs/box_encodings"]
        self._logits = outputs["raw_outputs/class_predictions"]
        self.anchors = ssd_anchors()
        self.labels = list(labels) if labels is not None else [f"class {k}" for k in range(24)]
        self.score_threshold = score_threshold
        self.iou_threshold = iou_threshold
        self.max_boxes = max_boxes

    def _run(self, image: Image.Image) -> tuple[np.ndarray, np.ndarray]:
        """(encodings [N, 4], logits [N, C]) for the image."""
        if image.mode != "RGB":
            image = image.convert("RGB")
        # reducing_gap: box-reduce by an integer factor first (as detect._to_square does).
        small = image.resize((SSD_INPUT_SIZE, SSD_INPUT_SIZE), Image.Resampling.BILINEAR, reducing_gap=1.0)
        x = np.asarray(small, dtype=np.float32)[None] * (2.0 / 255.0) - 1.0
        self.interpreter.set_tensor(self._input, x)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self._boxes)[0], self.interpreter.get_tensor(self._logits)[0]

    def detect(self, image: Image.Image) -> list[Box]:
        encodings, logits = self._run(image)
        # the best non-background class; sigmoid is monotonic, so threshold the logits first
        classes = logits[:, 1:].argmax(axis=1) + 1
        best = logits[np.arange(len(logits)), classes]
        keep = np.flatnonzero(best >= _logit(self.score_threshold))
        if keep.size == 0:
            return []
        scores = 1.0 / (1.0 + np.exp(-best[keep]))
        coords = decode_ssd_boxes(encodings[keep], self.anchors[keep]) * np.array([image.width, image.height] * 2)
        boxes = [
            Box(*c, score=s, label=self._label(k)).clip(*image.size)
            for c, s, k in zip(coords.tolist(), scores.tolist(), classes[keep].tolist())
        ]
        boxes.sort(key=lambda b: -b.score)
        return nms(boxes, self.iou_threshold, self.max_boxes)

    def _label(self, k: int) -> str:
        return self.labels[k].lower() if k < len(self.labels) else f"class {k}"


def _logit(p: float) -> float:
    if p <= 0.0:
        return -math.inf
    if p >= 1.0:
        return math.inf
    return math.log(p / (1.0 - p))


__all__ = ["SSD_NUM_ANCHORS", "SsdOidv4Detector", "decode_ssd_boxes", "ssd_anchors"]
