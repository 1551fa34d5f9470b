"""NanoDet's TorchScript file re-planned at load time for one-thread CPU inference.

:func:`optimize_for_cpu` turns the file that :mod:`vision.nanodet` converted (at set-up)
into a :class:`CpuNanoDet`: the same six maps from the same RGB 0..1 input, up to float
rounding, in ~4/5 of the time, and able to run at other multiples of 32 than the traced
416 px. The file itself is untouched.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from vision.nanodet import INPUT_SIZE, ConversionError, reference_input

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
