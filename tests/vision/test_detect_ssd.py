"""vision.detect_ssd: SSD anchors and box decoding exactly; the real OIDv4 SSD on studio photos.

Tests marked ``weights`` run the TFLite file set up by ``python -m vision.weights``.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vision.detect import DETECTOR_NAMES, Box, choose_box, detect_with_whole_image, make_detector
from vision.detect_ssd import SSD_NUM_ANCHORS, SsdOidv4Detector, decode_ssd_boxes, ssd_anchors
from vision.weights import WeightsUnavailable

SHARED = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "grocery-store"


def test_anchor_count_shape_and_layout():
    anchors = ssd_anchors()
    assert anchors.shape == (SSD_NUM_ANCHORS, 4) == (1917, 4) and anchors.dtype == np.float32
    # lowest layer: 19x19 cells, 3 anchors each, centres (i + 0.5) / 19, row-major
    first = anchors[:3]
    np.testing.assert_allclose(first[:, :2], [[0.5 / 19, 0.5 / 19]] * 3, rtol=1e-6)
    # (scale 0.1, ratio 1), (0.2, ratio 2), (0.2, ratio 0.5): (height, width) = (s / sqrt r, s * sqrt r)
    r2 = math.sqrt(2.0)
    np.testing.assert_allclose(first[:, 2:], [[0.1, 0.1], [0.2 / r2, 0.2 * r2], [0.2 * r2, 0.2 / r2]], rtol=1e-6)
    np.testing.assert_allclose(anchors[3, :2], [0.5 / 19, 1.5 / 19], rtol=1e-6)  # next cell: x moves first
    # second layer starts after 19*19*3 anchors: 10x10 cells, 6 anchors at scale 0.35 (+ the interpolated one)
    second = anchors[1083:1089]
    np.testing.assert_allclose(second[:, :2], [[0.05, 0.05]] * 6, rtol=1e-6)
    np.testing.assert_allclose(second[0, 2:], [0.35, 0.35], rtol=1e-6)
    np.testing.assert_allclose(second[5, 2:], [math.sqrt(0.35 * 0.5)] * 2, rtol=1e-6)
    # the last layer is one cell at the centre; its interpolated anchor is sqrt(0.95 * 1)
    np.testing.assert_allclose(anchors[-6:, :2], [[0.5, 0.5]] * 6, rtol=1e-6)
    np.testing.assert_allclose(anchors[-1, 2:], [math.sqrt(0.95)] * 2, rtol=1e-6)
    np.testing.assert_allclose(anchors[-5, 2:], [0.95 / math.sqrt(2.0), 0.95 * math.sqrt(2.0)], rtol=1e-6)


def test_decode_with_the_box_coder():
    anchors = np.array([[0.5, 0.5, 0.2, 0.4], [0.25, 0.75, 0.1, 0.1]], dtype=np.float32)  # yc, xc, h, w
    encodings = np.array(
        [
            [0.0, 0.0, 0.0, 0.0],  # the anchor itself
            [10.0, -5.0, 5.0 * math.log(2.0), -5.0 * math.log(2.0)],  # y += 1 h, x -= 0.5 w, h * 2, w / 2
        ],
        dtype=np.float32,
    )
    boxes = decode_ssd_boxes(encodings, anchors)  # x1, y1, x2, y2
    np.testing.assert_allclose(boxes[0], [0.3, 0.4, 0.7, 0.6], atol=1e-6)
    # centre y 0.25 + 0.1 = 0.35, x 0.75 - 0.05 = 0.70; h 0.2, w 0.05
    np.testing.assert_allclose(boxes[1], [0.675, 0.25, 0.725, 0.45], atol=1e-6)


class _FakeInterpreter:
    """Stands in for the TFLite interpreter: fixed outputs, records the input."""

    def __init__(self, encodings: np.ndarray, logits: np.ndarray) -> None:
        self.outputs = {241: encodings[None], 244: logits[None]}
        self.input: np.ndarray | None = None

    def get_input_details(self):
        return [{"index": 0, "shape": np.array([1, 300, 300, 3])}]

    def get_output_details(self):
        return [
            {"index": 241, "name": "raw_outputs/box_encodings"},
            {"index": 244, "name": "raw_outputs/class_predictions"},
        ]

    def set_tensor(self, index, value):
        self.input = value

    def invoke(self):
        pass

    def get_tensor(self, index):
        return self.outputs[index]


def test_detector_scores_labels_nms_and_pixels(monkeypatch):
    anchors = ssd_anchors()
    centre = SSD_NUM_ANCHORS - 6  # the last layer's (0.95, ratio 1) anchor, centred
    encodings = np.zeros((SSD_NUM_ANCHORS, 4), dtype=np.float32)
    logits = np.full((SSD_NUM_ANCHORS, 24), -10.0, dtype=np.float32)
    logits[centre, 16] = 2.0  # "Bottle", sigmoid 0.881
    logits[centre + 5, 11] = 1.0  # "Box" on the 0.975 square anchor there: IoU 0.95, suppressed
    logits[0, 0] = 5.0  # background only: never a box
    logits[5, 12] = -1.0  # "Mug" at 0.269: under the threshold
    fake = _FakeInterpreter(encodings, logits)
    monkeypatch.setattr("vision.detect_ssd._load_interpreter", lambda path: fake)
    labels = ["???", *[f"L{k}" for k in range(1, 24)]]
    labels[16], labels[11] = "Bottle", "Box"
    detector = SsdOidv4Detector(Path("unused.tflite"), labels)
    # a 400x200 image: boxes come back in its pixels, through the plain (non-square) resize
    image = Image.new("RGB", (400, 200), (255, 255, 255))
    boxes = detector.detect(image)
    assert len(boxes) == 1
    (box,) = boxes
    assert box.label == "bottle" and box.score == pytest.approx(1 / (1 + math.exp(-2.0)), rel=1e-6)
    half = 0.95 / 2
    expected = Box(400 * (0.5 - half), 200 * (0.5 - half), 400 * (0.5 + half), 200 * (0.5 + half), 0, "")
    np.testing.assert_allclose(box.as_tuple(), expected.as_tuple(), atol=1e-3)
    assert anchors[centre, 2] == pytest.approx(0.95)
    # the input was the image at 300x300 in [-1, 1]
    assert fake.input.shape == (1, 300, 300, 3) and fake.input.dtype == np.float32
    np.testing.assert_allclose(fake.input, 1.0, atol=1e-6)


def test_registered_and_refuses_without_weights(tmp_path, monkeypatch):
    assert "ssd_oidv4" in DETECTOR_NAMES
    monkeypatch.setenv("VISUALSHOP_MODEL_DIR", str(tmp_path / "models"))
    with pytest.raises(WeightsUnavailable, match="python -m vision.weights ssd_oidv4"):
        make_detector("ssd_oidv4")


# --------------------------------------------------------------------------- the real SSD


@functools.cache
def _load_real_ssd() -> SsdOidv4Detector:
    return make_detector("ssd_oidv4")  # type: ignore[return-value]


@pytest.fixture
def real_ssd() -> SsdOidv4Detector:
    # Function scope, so that the suite's missing-weights check (autouse) runs first.
    return _load_real_ssd()


def _object_box(image: Image.Image) -> Box:
    """Bounding box of the non-white pixels of a studio photo (one product on white)."""
    pixels = np.asarray(image.convert("RGB")).min(axis=2)
    ys, xs = np.nonzero(pixels < 235)
    return Box(float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1), 1.0, "object")


@pytest.mark.weights
@pytest.mark.parametrize("product", ["Bravo-Apple-Juice", "Alpro-Fresh-Soy-Milk", "God-Morgon-Orange-Juice"])
def test_ssd_boxes_the_bottle_in_a_studio_photo(real_ssd, product):
    # given a catalog photo: one product on a white background
    image = Image.open(SHARED / "catalog" / product / f"{product}_Iconic.jpg").convert("RGB")
    expected = _object_box(image)
    # when detecting
    boxes = real_ssd.detect(image)
    # then the best box is the product, in the image's pixels, and it is the one chosen
    assert boxes and boxes[0].label == "bottle"
    assert boxes[0].iou(expected) >= 0.8, (boxes[0], expected)
    candidates = detect_with_whole_image(real_ssd, image)
    assert candidates[choose_box(candidates, *image.size)].label == "bottle"
    assert all(0 <= b.x1 < b.x2 <= image.width and 0 <= b.y1 < b.y2 <= image.height for b in boxes)
    assert len(boxes) <= 10 and all(0.3 <= b.score <= 1 for b in boxes)
