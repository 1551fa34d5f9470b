"""vision.detect and vision.nanodet: boxes, NMS, box choice, the converter, the real NanoDet.

Unit tests run on synthetic boxes, graphs and model outputs with exact answers; tests
marked ``weights`` run the converted NanoDet on the shared Grocery Store photos.
"""

from __future__ import annotations

import functools
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from vision import nanodet, nanodet_cpu
from vision.detect import (
    COCO_CLASSES,
    NANODET_INPUT_SIZE,
    NANODET_REG_BINS,
    NANODET_STRIDES,
    Box,
    BoxChoice,
    NanoDetDetector,
    NoDetector,
    WeightsUnavailable,
    _to_square,
    choose_box,
    decode_nanodet,
    detect_with_whole_image,
    make_detector,
    nms,
    validate_box,
    whole_image_box,
)

torch.set_num_threads(1)

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "datasets" / "grocery-store"


def _box(x1: float, y1: float, x2: float, y2: float, score: float = 0.5, label: str = "thing") -> Box:
    return Box(float(x1), float(y1), float(x2), float(y2), score, label)


# --------------------------------------------------------------------------- Box


def test_box_helpers():
    # given two 10x10 boxes overlapping in a 5x5 square
    a, b = _box(0, 0, 10, 10), _box(5, 5, 15, 15)
    # then
    assert a.area == 100.0
    assert a.as_tuple() == (0.0, 0.0, 10.0, 10.0)
    assert a.iou(b) == pytest.approx(25 / 175)
    assert a.iou(a) == 1.0
    assert a.iou(_box(20, 20, 30, 30)) == 0.0
    assert _box(-5, 3, 12, 40).clip(10, 20).as_tuple() == (0.0, 3.0, 10.0, 20.0)
    assert _box(5, 5, 2, 2).area == 0.0  # inverted boxes have no area


# --------------------------------------------------------------------------- NMS


def test_nms_keeps_the_best_of_each_overlapping_group():
    # given two overlapping pairs (IoU 81/119 = 0.68) and one separate box
    boxes = [
        _box(1, 1, 11, 11, 0.8, "cup"),
        _box(20, 20, 30, 30, 0.7, "apple"),
        _box(0, 0, 10, 10, 0.9, "bottle"),
        _box(21, 21, 31, 31, 0.75, "orange"),
        _box(50, 50, 60, 60, 0.1, "tie"),
    ]
    # when suppression is class-agnostic at IoU 0.5
    kept = nms(boxes, iou_threshold=0.5)
    # then each group keeps only its best box, whatever the labels; best first
    assert [b.label for b in kept] == ["bottle", "orange", "tie"]
    # and a looser threshold keeps the overlapping ones, max_boxes truncates
    assert [b.label for b in nms(boxes, iou_threshold=0.7)] == ["bottle", "cup", "orange", "apple", "tie"]
    assert [b.label for b in nms(boxes, iou_threshold=0.7, max_boxes=2)] == ["bottle", "cup"]
    assert nms([], 0.5) == []


# --------------------------------------------------------------------------- choose_box


def test_choose_box_score_is_the_weighted_sum():
    # given a 100x100 image, a centred box and a larger, more confident off-centre box
    centred = _box(40, 40, 60, 60, 0.5)  # centrality 1, area 0.04
    corner = _box(0, 0, 50, 50, 0.9)  # centre (25, 25): centrality 1 - 35.36/70.71 = 0.5, area 0.25
    # when only the centre counts, the centred box wins; when only the score counts, the other
    assert choose_box([centred, corner], 100, 100, BoxChoice(1, 0, 0, min_score=0, min_area=0)) == 0
    assert choose_box([centred, corner], 100, 100, BoxChoice(0, 1, 0, min_score=0, min_area=0)) == 1
    # then with mixed weights the exact sums decide: 0.5*1 + 0.5*0.5 = 0.75 vs 0.5*0.5 + 0.5*0.9 = 0.70
    assert choose_box([centred, corner], 100, 100, BoxChoice(0.5, 0.5, 0, min_score=0, min_area=0)) == 0
    # 0.4*1 + 0.4*0.5 + 0.2*0.04 = 0.608 vs 0.4*0.5 + 0.4*0.9 + 0.2*0.25 = 0.61
    assert choose_box([centred, corner], 100, 100, BoxChoice(0.4, 0.4, 0.2, min_score=0, min_area=0)) == 1


def test_choose_box_ties_go_to_the_earlier_box():
    twin = _box(40, 40, 60, 60, 0.6)
    assert choose_box([twin, twin], 100, 100) == 0


def test_whole_image_wins_over_weak_off_centre_detections():
    # given a confident detection in a corner and a weak small one, plus the whole image
    boxes = [_box(0, 0, 30, 30, 0.45), _box(45, 45, 55, 55, 0.31), whole_image_box(100, 100)]
    # when choosing with the defaults
    chosen = choose_box(boxes, 100, 100)
    # then the whole image (0.3*1 + 0 + 0.2*1 = 0.5) beats 0.3*0.3+0.5*0.45+0.2*0.09 = 0.333
    assert boxes[chosen].label == "image"


def test_confident_central_detection_beats_the_whole_image():
    boxes = [_box(30, 20, 70, 80, 0.6), whole_image_box(100, 100)]
    # 0.3*1 + 0.5*0.6 + 0.2*0.24 = 0.648 > 0.5
    assert choose_box(boxes, 100, 100) == 0


def test_choose_box_ignores_low_scores_and_tiny_boxes():
    # given a central box under min_score, a central box under 1% of the image, and the whole image
    boxes = [_box(40, 40, 60, 60, 0.29), _box(48, 48, 57, 57, 0.99), whole_image_box(100, 100)]
    assert choose_box(boxes, 100, 100) == 2
    # without the whole-image candidate there is nothing to choose
    with pytest.raises(ValueError, match="no eligible box"):
        choose_box(boxes[:2], 100, 100)


# --------------------------------------------------------------------------- validate_box


def test_validate_box_accepts_boxes_inside_the_image():
    box = validate_box((0, 0.5, 640, 480), 640, 480)
    assert box.as_tuple() == (0.0, 0.5, 640.0, 480.0) and box.label == "user"


@pytest.mark.parametrize(
    ("box", "message"),
    [
        ((-1, 0, 10, 10), "outside the 640x480 image"),
        ((0, 0, 641, 10), "outside the 640x480 image"),
        ((0, 0, 10, 481), "outside the 640x480 image"),
        ((10, 10, 5, 20), "empty or inverted"),
        ((10, 10, 20, 5), "empty or inverted"),
        ((10, 10, 10, 20), "empty or inverted"),
        ((0, 0, 10), "4 numbers"),
        ((0, 0, 10, float("nan")), "finite"),
        ((0, 0, "ten", 10), "must be numbers"),
    ],
)
def test_validate_box_rejects(box, message):
    with pytest.raises(ValueError, match=message):
        validate_box(box, 640, 480)


# --------------------------------------------------------------------------- detectors


class _StubDetector:
    name = "stub"

    def detect(self, image: Image.Image) -> list[Box]:
        return [_box(1, 2, 3, 4, 0.9, "cup")]


def test_whole_image_candidate_is_always_added():
    image = Image.new("RGB", (64, 48))
    assert detect_with_whole_image(NoDetector(), image) == [Box(0.0, 0.0, 64.0, 48.0, 0.0, "image")]
    boxes = detect_with_whole_image(_StubDetector(), image)
    assert [b.label for b in boxes] == ["cup", "image"]


def test_make_detector_names_and_missing_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("VISUALSHOP_MODEL_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    assert make_detector("none").name == "none"
    with pytest.raises(ValueError, match="unknown detector"):
        make_detector("yolo")
    with pytest.raises(WeightsUnavailable, match="python -m vision.weights"):
        make_detector("nanodet")
    # torchvision's detectors must refuse rather than download
    with pytest.raises(WeightsUnavailable, match="fasterrcnn_mobilenet_v3_large_320_fpn-907ea3f9.pth"):
        make_detector("fasterrcnn_mobilenet_v3_large_320_fpn")


def _raw_outputs(hits: dict[tuple[int, int], tuple[int, float, int]]) -> tuple[torch.Tensor, ...]:
    """Fake NanoDet maps: {(stride index, cell): (class, score, distance in strides)}."""
    cls_maps, reg_maps = [], []
    for level, stride in enumerate(NANODET_STRIDES):
        cells = (nanodet.INPUT_SIZE // stride) ** 2
        cls = torch.zeros(1, cells, len(COCO_CLASSES))
        reg = torch.zeros(1, cells, 4, NANODET_REG_BINS)
        for (lvl, cell), (k, score, dist) in hits.items():
            if lvl == level:
                cls[0, cell, k] = score
                reg[0, cell, :, dist] = 100.0  # softmax puts all mass on this distance
        cls_maps.append(cls)
        reg_maps.append(reg.reshape(1, cells, -1))
    return (*cls_maps, *reg_maps)


def test_decode_gfl_geometry():
    # given one hit at stride 16, row 3 column 5 (cell centre 88, 56), 2 strides to every side
    outputs = _raw_outputs({(1, 3 * 26 + 5): (46, 0.8, 2)})
    # when decoded
    boxes, scores = decode_nanodet(outputs)
    # then the box is the centre +- 32 px, and it is found among all 2704 + 676 + 169 cells
    assert boxes.shape == (3549, 4) and scores.shape == (3549, 80)
    i = int(scores.max(dim=1).values.argmax())
    assert i == 2704 + 3 * 26 + 5
    assert boxes[i].tolist() == pytest.approx([56.0, 24.0, 120.0, 88.0], abs=1e-4)


def test_decode_only_some_cells():
    # given maps with hits at all three strides
    outputs = _raw_outputs({(0, 7): (1, 0.5, 3), (1, 300): (2, 0.6, 1), (2, 168): (3, 0.7, 9)})
    everything, scores = decode_nanodet(outputs)
    # when only some cells are decoded, in any order
    cells = torch.tensor([2704 + 676 + 168, 7, 2704 + 300, 5])
    some, same_scores = decode_nanodet(outputs, cells=cells)
    # then they are exactly those rows, and the scores are still all of them
    assert torch.equal(some, everything[cells]) and torch.equal(same_scores, scores)
    assert decode_nanodet(outputs, cells=torch.tensor([], dtype=torch.long))[0].shape == (0, 4)


def test_nanodet_detector_maps_boxes_back_through_the_letterbox():
    # given a 832x416 image: letterboxed to 416x208 at scale 0.5, 104 px of padding above
    # and a fake model that sees a banana in the cell centred at (204, 212), 4 strides of 8 each way
    row, col = 26, 25  # centre ((25 + 0.5) * 8, (26 + 0.5) * 8)
    outputs = _raw_outputs({(0, row * 52 + col): (46, 0.9, 4)})
    detector = NanoDetDetector(model=lambda x: outputs, letterbox=True)
    # when detecting
    boxes = detector.detect(Image.new("RGB", (832, 416)))
    # then the box is in the image's own pixels: ((204 +- 32) * 2, (212 +- 32 - 104) * 2)
    assert len(boxes) == 1 and boxes[0].label == "banana" and boxes[0].score == pytest.approx(0.9)
    assert boxes[0].as_tuple() == pytest.approx((344.0, 152.0, 472.0, 280.0), abs=1e-3)


# --------------------------------------------------------------------------- the converter


def test_read_tfjs_weights_decodes_float16_uint8_and_int32(tmp_path):
    # given a manifest with an fp16 tensor, an affine-quantised uint8 tensor and an int32 one
    halves = np.array([[0.5, -2.0], [1.0, 65504.0]], dtype="<f2")
    quant = np.array([0, 1, 255], dtype="u1")
    ints = np.array([3, -7], dtype="<i4")
    (tmp_path / "shard.bin").write_bytes(halves.tobytes() + quant.tobytes() + ints.tobytes())
    manifest = {
        "weightsManifest": [
            {
                "paths": ["shard.bin"],
                "weights": [
                    {"name": "h", "shape": [2, 2], "dtype": "float32", "quantization": {"dtype": "float16"}},
                    {
                        "name": "q",
                        "shape": [3],
                        "dtype": "float32",
                        "quantization": {"dtype": "uint8", "min": -1.0, "scale": 0.5},
                    },
                    {"name": "i", "shape": [2], "dtype": "int32"},
                ],
            }
        ]
    }
    # when read
    weights = nanodet.read_tfjs_weights(manifest, tmp_path)
    # then
    np.testing.assert_array_equal(weights["h"], halves.astype(np.float32))
    np.testing.assert_array_equal(weights["q"], np.array([-1.0, -0.5, 126.5], dtype=np.float32))
    np.testing.assert_array_equal(weights["i"], ints)


def _node(name: str, op: str, inputs: list[str] | None = None, **attr) -> dict:
    return {"name": name, "op": op, "input": inputs or [], "attr": attr}


def test_tfjs_graph_runs_an_exported_conv_block_like_pytorch():
    # given the ONNX->TF pattern: NCHW pad -> NHWC conv -> bias -> back to NCHW -> LeakyReLU
    rng = np.random.default_rng(0)
    kernel = rng.standard_normal((3, 3, 4, 6)).astype(np.float32)  # HWIO
    bias = rng.standard_normal(6).astype(np.float32)
    nhwc = {"s": "TkhXQw=="}  # base64 "NHWC", as in the JSON
    graph = {
        "modelTopology": {
            "node": [
                _node("x", "Placeholder"),
                _node("pads", "Const"),
                _node("to_nhwc", "Const"),
                _node("to_nchw", "Const"),
                _node("k", "Const"),
                _node("b", "Const"),
                _node("pad", "Pad", ["x", "pads"]),
                _node("t1", "Transpose", ["pad", "to_nhwc"]),
                _node(
                    "conv",
                    "Conv2D",
                    ["t1", "k"],
                    padding={"s": "VkFMSUQ="},
                    data_format=nhwc,
                    strides={"list": {"i": ["1", "2", "2", "1"]}},
                    dilations={"list": {"i": ["1", "1", "1", "1"]}},
                ),
                _node("add", "AddV2", ["conv", "b"]),
                _node("t2", "Transpose", ["add", "to_nchw"]),
                _node("out", "LeakyRelu", ["t2"], alpha={"f": 0.1}),
            ]
        }
    }
    consts = {
        "pads": np.array([[0, 0], [0, 0], [1, 1], [1, 1]], dtype=np.int32),
        "to_nhwc": np.array([0, 2, 3, 1], dtype=np.int32),
        "to_nchw": np.array([0, 3, 1, 2], dtype=np.int32),
        "k": kernel,
        "b": bias,
    }
    module = nanodet.TfjsGraph(graph, consts, input_name="x", output_names=("out",))
    x = torch.from_numpy(rng.standard_normal((1, 4, 9, 9)).astype(np.float32))
    # when run
    (got,) = module(x)
    # then it equals the PyTorch block, and the pad and bias were folded into the convolution
    want = F.leaky_relu(F.conv2d(x, torch.from_numpy(kernel).permute(3, 2, 0, 1), torch.from_numpy(bias), 2, 1), 0.1)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert [s.op for s in module.steps] == ["Conv2D", "Transpose", "LeakyRelu"]


def test_reference_input_is_regenerated_exactly():
    x = nanodet.reference_input()
    assert x.shape == (1, 3, 416, 416) and x.dtype == torch.float32
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    # nearest-neighbour x4: every 4x4 block is one pixel of the committed PNG
    assert torch.equal(x[..., ::4, ::4].repeat_interleave(4, -1).repeat_interleave(4, -2), x)


# --------------------------------------------------------------------------- load-time CPU plan


def _exported_detector_graph(resize_to: int | None = None) -> tuple[dict, dict]:
    """A small graph in the exporter's style: stem conv + LeakyReLU, PadV2(-inf) + max-pool,
    a conv + LeakyReLU and a bare 1x1 conv, two outputs (sigmoid scores, raw maps); with
    ``resize_to``, the raw maps are resized to that fixed size (as the FPN's upsampling)."""
    rng = np.random.default_rng(1)
    nhwc = {"s": "TkhXQw=="}  # base64 "NHWC"
    valid = {"s": "VkFMSUQ="}  # base64 "VALID"
    window, window_stride = {"list": {"i": ["1", "3", "3", "1"]}}, {"list": {"i": ["1", "2", "2", "1"]}}

    def conv(name: str, src: str, k: str, b: str, stride: int) -> list[dict]:
        return [
            _node(f"{name}_pad", "Pad", [src, "pads1"]),
            _node(f"{name}_t", "Transpose", [f"{name}_pad", "to_nhwc"]),
            _node(
                f"{name}",
                "Conv2D",
                [f"{name}_t", k],
                padding=valid,
                data_format=nhwc,
                strides={"list": {"i": ["1", str(stride), str(stride), "1"]}},
            ),
            _node(f"{name}_add", "AddV2", [name, b]),
            _node(f"{name}_out", "Transpose", [f"{name}_add", "to_nchw"]),
        ]

    nodes = [_node(n, "Const") for n in ("pads1", "pads0", "to_nhwc", "to_nchw", "ninf", "k1", "b1", "k2", "b2")]
    nodes += [_node(n, "Const") for n in ("k3", "b3")]
    nodes += [_node("x", "Placeholder")]
    nodes += conv("c1", "x", "k1", "b1", 2)
    nodes += [
        _node("a1", "LeakyRelu", ["c1_out"], alpha={"f": 0.1}),
        _node("pp", "PadV2", ["a1", "pads1", "ninf"]),
        _node("pt", "Transpose", ["pp", "to_nhwc"]),
        _node("pool", "MaxPool", ["pt"], ksize=window, strides=window_stride, padding=valid),
        _node("pool_out", "Transpose", ["pool", "to_nchw"]),
    ]
    nodes += conv("c2", "pool_out", "k2", "b2", 1)
    nodes += [_node("a2", "LeakyRelu", ["c2_out"], alpha={"f": 0.1}), _node("scores", "Sigmoid", ["a2"])]
    nodes += conv("c3", "pool_out", "k3", "b3", 1)
    nodes[-5]["input"][1] = "pads0"  # the 1x1 conv: no padding
    if resize_to is not None:
        half_pixel = {"b": True}
        nodes += [
            _node("size", "Const"),
            _node("up", "ResizeBilinear", ["c3_add", "size"], half_pixel_centers=half_pixel),
            _node("up_out", "Transpose", ["up", "to_nchw"]),
        ]
    consts = {
        "pads1": np.array([[0, 0], [0, 0], [1, 1], [1, 1]], dtype=np.int32),
        "pads0": np.zeros((4, 2), dtype=np.int32),
        "to_nhwc": np.array([0, 2, 3, 1], dtype=np.int32),
        "to_nchw": np.array([0, 3, 1, 2], dtype=np.int32),
        "ninf": np.array(-np.inf, dtype=np.float32),
        "k1": rng.standard_normal((3, 3, 3, 8)).astype(np.float32) * 0.3,
        "b1": rng.standard_normal(8).astype(np.float32),
        "k2": rng.standard_normal((3, 3, 8, 6)).astype(np.float32) * 0.3,
        "b2": rng.standard_normal(6).astype(np.float32),
        "k3": rng.standard_normal((1, 1, 8, 4)).astype(np.float32) * 0.3,
        "b3": rng.standard_normal(4).astype(np.float32),
        "size": np.array([resize_to or 0] * 2, dtype=np.int32),
    }
    return {"modelTopology": {"node": nodes}}, consts


@functools.cache
def _synthetic_torchscript(resize_to: int | None = None) -> torch.jit.ScriptModule:
    """Traced at 64x64, so the raw maps are 16x16 before any resize."""
    graph, consts = _exported_detector_graph(resize_to)
    outputs = ("scores", "c3_out" if resize_to is None else "up_out")
    model = nanodet.NanoDet(nanodet.TfjsGraph(graph, consts, input_name="x", output_names=outputs))
    example = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", FutureWarning)
        return torch.jit.freeze(torch.jit.trace(model.eval(), example, check_trace=False).eval())


def test_cpu_plan_gives_the_graphs_outputs_with_its_rewrites():
    # given a frozen, traced graph like the converter writes (normalisation in front)
    scripted = _synthetic_torchscript()
    # when it is re-planned for the CPU
    fast = nanodet_cpu.CpuNanoDet(scripted)
    # then every rewrite applied: normalisation folded into the stem, the -inf pad into the
    # pool, both LeakyReLUs into their convolutions, the copies to NCHW dropped
    assert fast.rewrites["normalisation"] == 1 and fast.rewrites["pool_padding"] == 1
    assert fast.rewrites["conv_leaky_relu"] == 2 and fast.rewrites["conv"] == 1
    assert fast.rewrites["layout_only"] > 0
    # and the outputs are the graph's, for NCHW and channels-last inputs, at any size
    for size in (64, 50):
        x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(size))
        with torch.no_grad():
            want = scripted(x)
        for layout in (torch.contiguous_format, torch.channels_last):
            got = fast(x.contiguous(memory_format=layout))
            assert [g.shape for g in got] == [w.shape for w in want]
            for g, w in zip(got, want):
                torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-5)


def test_cpu_plan_runs_fixed_resizes_by_their_factor():
    # given a graph that upsamples its 16x16 maps to a fixed 32x32 (traced at 64 px)
    scripted = _synthetic_torchscript(resize_to=32)
    fast = nanodet_cpu.CpuNanoDet(scripted, traced_size=64)
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    # then at the traced size the maps are the graph's
    with torch.no_grad():
        for got, want in zip(fast(x), scripted(x)):
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    # and at another size the resize doubles, where the graph would still give 32x32
    assert fast.any_size
    assert fast(torch.rand(1, 3, 96, 96))[1].shape == (1, 4, 48, 48)
    # calibrated at a size the fixed resize does not double, the plan keeps the fixed size
    assert not nanodet_cpu.CpuNanoDet(scripted, traced_size=96).any_size


def test_detector_input_size_needs_a_model_that_can_run_it():
    outputs = _raw_outputs({})
    # a fixed model (the file, or a stand-in) runs at the size it was traced at
    assert NanoDetDetector(model=lambda x: outputs).input_size == nanodet.INPUT_SIZE
    with pytest.raises(ValueError, match="cannot run at 384"):
        NanoDetDetector(model=lambda x: outputs, input_size=384)
    with pytest.raises(ValueError, match="multiple of 32"):
        NanoDetDetector(model=nanodet_cpu.CpuNanoDet(_synthetic_torchscript()), input_size=400)


def test_cpu_plan_falls_back_to_the_graph_when_it_drifts():
    scripted = _synthetic_torchscript()
    assert isinstance(nanodet_cpu.optimize_for_cpu(scripted), nanodet_cpu.CpuNanoDet)
    with pytest.warns(RuntimeWarning, match="runs unoptimised"):
        assert nanodet_cpu.optimize_for_cpu(scripted, tolerance=-1.0) is scripted


def test_to_square_gives_channels_last_pixels_and_the_letterbox():
    # given a 300x200 photo letterboxed to 64x64: scale 64/300, 43 rows of image, 10 rows of padding above
    rng = np.random.default_rng(2)
    image = Image.fromarray(rng.integers(0, 256, (200, 300, 3), dtype=np.uint8))
    x, scale, (pad_x, pad_y) = _to_square(image, 64, letterbox=True)
    # then the tensor is NHWC in memory (what CpuNanoDet runs on), in 0..1
    assert x.shape == (1, 3, 64, 64) and x.is_contiguous(memory_format=torch.channels_last)
    assert (pad_x, pad_y) == (0, 10) and scale == pytest.approx((64 / 300, 43 / 200))
    resized = np.asarray(image.resize((64, 43), Image.Resampling.BILINEAR, reducing_gap=1.0))
    pixels = (x[0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
    np.testing.assert_array_equal(pixels[10:53], resized)
    mean_rgb = [round(c) for c in nanodet.BGR_MEAN[::-1]]
    assert (pixels[:10] == mean_rgb).all() and (pixels[53:] == mean_rgb).all()


# --------------------------------------------------------------------------- real NanoDet


@functools.cache
def _load_real_nanodet() -> NanoDetDetector:
    return NanoDetDetector()


@pytest.fixture
def real_nanodet() -> NanoDetDetector:
    # Function scope, so that the suite's missing-weights check (autouse) runs first and
    # skips or fails the test; the model itself is loaded once.
    return _load_real_nanodet()


def _object_box(image: Image.Image) -> Box:
    """Bounding box of the non-white pixels of a studio photo (one product on white)."""
    pixels = np.asarray(image.convert("RGB")).min(axis=2)
    ys, xs = np.nonzero(pixels < 235)
    return _box(xs.min(), ys.min(), xs.max() + 1, ys.max() + 1, 1.0, "object")


@pytest.mark.weights
def test_converted_nanodet_matches_the_tfjs_reference():
    from vision.weights import nanodet_path

    worst = nanodet.check_against_reference(nanodet.load_torchscript(nanodet_path()))
    assert worst < 1e-4


@pytest.mark.weights
def test_cpu_plan_of_the_real_nanodet_matches_the_file_and_the_reference(real_nanodet):
    from vision.weights import nanodet_path

    scripted = nanodet.load_torchscript(nanodet_path())
    fast = real_nanodet.model
    # the detector runs the re-planned model, with every rewrite applied, at the default size
    assert isinstance(fast, nanodet_cpu.CpuNanoDet)
    assert fast.rewrites["normalisation"] == 1 and fast.rewrites["pool_padding"] == 1
    assert fast.rewrites["conv_leaky_relu"] == 28 and fast.rewrites["conv"] == 6
    assert fast.any_size and real_nanodet.input_size == NANODET_INPUT_SIZE
    with torch.no_grad():
        maps = fast(torch.rand(1, 3, 384, 384))
    assert [m.shape[1] for m in maps] == [48 * 48, 24 * 24, 12 * 12] * 2
    # it passes the tfjs reference check, and matches the file on a real letterboxed photo
    assert nanodet.check_against_reference(fast) < 1e-4
    photo = Image.open(SHARED / "reviews" / "Banana" / "Banana_002.jpg").convert("RGB")
    x, _, _ = _to_square(photo, nanodet.INPUT_SIZE, letterbox=True)
    with torch.no_grad():
        drift = max((a - b).abs().max().item() for a, b in zip(fast(x), scripted(x)))
    assert drift < nanodet_cpu.CPU_MODEL_TOLERANCE


@pytest.mark.weights
@pytest.mark.parametrize("product", ["Bravo-Apple-Juice", "Arla-Sour-Milk", "Banana", "Orange"])
def test_nanodet_boxes_the_product_in_a_studio_photo(real_nanodet, product):
    # given a catalog photo: one product on a white background
    image = Image.open(next((SHARED / "catalog" / product).glob("*.jpg"))).convert("RGB")
    expected = _object_box(image)
    # when detecting and choosing a box
    boxes = detect_with_whole_image(real_nanodet, image)
    chosen = boxes[choose_box(boxes, *image.size)]
    # then a detection (not the whole-image candidate) is chosen, and it fits the product
    assert chosen.label != "image"
    assert chosen.iou(expected) >= 0.8, (chosen, expected)


@pytest.mark.weights
@pytest.mark.parametrize("photo", ["Banana/Banana_002.jpg", "Banana/Banana_010.jpg"])
def test_nanodet_names_bananas_in_shop_photos(real_nanodet, photo):
    image = Image.open(SHARED / "reviews" / photo).convert("RGB")
    boxes = real_nanodet.detect(image)
    assert boxes and boxes[0].label == "banana"
    assert all(0 <= b.x1 < b.x2 <= image.width and 0 <= b.y1 < b.y2 <= image.height for b in boxes)
    assert len(boxes) <= 10 and all(math.isfinite(b.score) for b in boxes)
