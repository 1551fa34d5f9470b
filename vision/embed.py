"""Image embedders: one preprocessing definition, pretrained torchvision backbones, an
optional trained projection head, and a raw-pixel baseline.

Every vector the platform stores or searches with comes from an :class:`Embedder`:
``embed(images) -> float32 [n, dim]``, rows L2-normalised, so inner product is cosine.
Each embedder carries a ``version`` derived from its weights and its preprocessing; a
vector is only comparable with vectors of the same version (DESIGN.md: one row per image
and embedder version, switch indexes when a new version is complete).

Weights are never downloaded here: a torchvision backbone loads only when its file is
already in ``torch.hub.get_dir()/checkpoints`` (vision.weights puts it there), otherwise
:class:`~vision.weights.WeightsUnavailable` is raised.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from argparse import Namespace
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
import torchvision
from PIL import Image
from torch import nn
from torchvision import transforms as T

from vision.weights import WeightsUnavailable, hub_checkpoint_dir

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

CHECKPOINT_FORMAT = "visualshop.embedder/1"
DEFAULT_ARCH = "mobilenet_v2"
DEFAULT_BATCH_SIZE = 32

_INTERPOLATIONS = {
    "bilinear": T.InterpolationMode.BILINEAR,
    "bicubic": T.InterpolationMode.BICUBIC,
    "nearest": T.InterpolationMode.NEAREST,
}


# --------------------------------------------------------------------------- preprocessing


@dataclass(frozen=True)
class Preprocess:
    """Resize the short side to ``resize``, centre-crop ``size`` x ``size``, normalise.

    The single definition shared by training, ingestion, search and evaluation: training
    code puts its augmentation in front of :meth:`tensor_transform`; everything else uses
    :meth:`transform`. The default is torchvision's ImageNet evaluation recipe (256 ->
    224): on the Grocery Store photos (MobileNetV2, catalog + reviews) it gave recall@1
    0.62 where keeping the whole short side (224 -> 224) gave 0.55; shoppers centre the
    product, so the 12% border it drops is mostly shelf.
    """

    size: int = 224
    resize: int = 256
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bilinear"

    def __post_init__(self) -> None:
        if self.size < 1 or self.resize < self.size:
            raise ValueError(f"need 1 <= size <= resize, got size={self.size} resize={self.resize}")
        if self.interpolation not in _INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {sorted(_INTERPOLATIONS)}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError("mean and std need three values, std > 0")

    def spec(self) -> dict[str, Any]:
        """JSON-able and stable: part of the model version id and of every checkpoint."""
        return {
            "schema": 1,
            "size": self.size,
            "resize": self.resize,
            "mean": [round(float(v), 6) for v in self.mean],
            "std": [round(float(v), 6) for v in self.std],
            "interpolation": self.interpolation,
        }

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> Preprocess:
        if spec.get("schema", 1) != 1:
            raise ValueError(f"unknown preprocessing schema {spec.get('schema')!r}")
        return cls(
            size=int(spec["size"]),
            resize=int(spec["resize"]),
            mean=tuple(float(v) for v in spec["mean"]),  # type: ignore[arg-type]
            std=tuple(float(v) for v in spec["std"]),  # type: ignore[arg-type]
            interpolation=str(spec.get("interpolation", "bilinear")),
        )

    def geometry_transform(self) -> T.Compose:
        """PIL -> PIL: resize the short side, centre crop."""
        return T.Compose(
            [
                T.Resize(self.resize, interpolation=_INTERPOLATIONS[self.interpolation], antialias=True),
                T.CenterCrop(self.size),
            ]
        )

    def tensor_transform(self) -> T.Compose:
        """PIL (already ``size`` x ``size``) -> normalised float tensor [3, size, size]."""
        return T.Compose([T.ToTensor(), T.Normalize(self.mean, self.std)])

    def transform(self) -> T.Compose:
        """PIL RGB image of any size -> normalised float tensor [3, size, size]."""
        return T.Compose([self.geometry_transform(), self.tensor_transform()])

    def batch(self, images: Sequence[Image.Image]) -> torch.Tensor:
        tf = self.transform()
        out = torch.stack([tf(_rgb(img)) for img in images])
        assert out.shape == (len(images), 3, self.size, self.size), out.shape
        return out


def _rgb(img: Image.Image) -> Image.Image:
    return img if img.mode == "RGB" else img.convert("RGB")


# --------------------------------------------------------------------------- protocol


@runtime_checkable
class Embedder(Protocol):
    """Turns images into L2-normalised float32 vectors [n, dim] comparable by inner product."""

    version: str
    dim: int

    def embed(self, images: Sequence[Image.Image], batch_size: int | None = None) -> np.ndarray: ...


def _l2_normalise(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)


def _sha256_json(obj: Any) -> hashlib._Hash:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode())


def state_digest(state: Mapping[str, torch.Tensor], h: hashlib._Hash | None = None) -> hashlib._Hash:
    """Hash a state dict's names, dtypes, shapes and bytes (independent of file format)."""
    h = h or hashlib.sha256()
    for key in sorted(state):
        t = state[key].detach().cpu().contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h


# --------------------------------------------------------------------------- pixel baseline


class PixelEmbedder:
    """Raw-pixel baseline: the image squashed to ``size`` x ``size`` RGB (through the shared
    Preprocess, without normalisation), flattened, mean-centred, L2-normalised."""

    def __init__(self, size: int = 32) -> None:
        self.preprocess = Preprocess(size=size, resize=size, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
        self.dim = 3 * size * size
        self.version = f"pixels-{_sha256_json({'kind': 'pixels', 'pre': self.preprocess.spec()}).hexdigest()[:12]}"

    def embed(self, images: Sequence[Image.Image], batch_size: int | None = None) -> np.ndarray:
        if not images:
            return np.zeros((0, self.dim), np.float32)
        x = self.preprocess.batch(images).reshape(len(images), -1).numpy().astype(np.float64)
        x -= x.mean(axis=1, keepdims=True)
        # A constant image centres to zero. Give it the all-ones direction instead: it is
        # orthogonal to every centred vector (cosine 0 with any real image, 1 with another
        # constant image) and keeps every row unit-norm, as the index requires.
        flat = np.linalg.norm(x, axis=1) < 1e-9
        x[flat] = 1.0
        out = _l2_normalise(x)
        assert out.shape == (len(images), self.dim)
        return out


# --------------------------------------------------------------------------- torchvision backbones


def checkpoint_dir() -> Path:
    """Where torchvision looks for (and would download) its weight files."""
    return hub_checkpoint_dir()


def resolve_weights(arch: str, weights: str = "auto") -> Any:
    """The torchvision weights enum member for ``arch`` whose file is already on disk.

    ``"auto"`` takes the DEFAULT member if its file is there, else any other member that
    is (MobileNetV2's DEFAULT is V2, but the offline package ships V1). Never downloads.
    """
    enum = torchvision.models.get_model_weights(arch)
    if weights == "auto":
        members = [enum.DEFAULT] + [m for m in enum if m != enum.DEFAULT]
    else:
        try:
            members = [enum[weights]]
        except KeyError as exc:
            raise ValueError(f"{arch} has no weights {weights!r}; known: {[m.name for m in enum]}") from exc
    for member in members:
        if (checkpoint_dir() / Path(member.url).name).is_file():
            return member
    wanted = ", ".join(str(checkpoint_dir() / Path(m.url).name) for m in members)
    raise WeightsUnavailable(f"no weights file for {arch}: expected one of {wanted} (nothing is downloaded)")


def _strip_classifier(model: nn.Module, arch: str) -> nn.Module:
    """Drop the ImageNet classifier so forward() returns the global-pooled features.

    Keeps whatever precedes the first Linear in the classifier (ConvNeXt's LayerNorm +
    Flatten) and drops dropout: features are for retrieval, not for the 1000 classes.
    """
    for attr in ("fc", "classifier", "heads", "head"):
        m = getattr(model, attr, None)
        if isinstance(m, nn.Linear):
            setattr(model, attr, nn.Identity())
            return model
        if isinstance(m, nn.Sequential):
            layers = list(m)
            cut = next((i for i, layer in enumerate(layers) if isinstance(layer, nn.Linear)), len(layers))
            setattr(model, attr, nn.Sequential(*[x for x in layers[:cut] if not isinstance(x, nn.Dropout)]))
            return model
    raise ValueError(f"don't know how to take pooled features from {arch}")


def build_backbone(arch: str, *, weights: str | None = "auto", seed: int = 0) -> tuple[nn.Module, str | None]:
    """A torchvision model without its classifier: [n, 3, H, W] -> [n, dim] pooled features.

    ``weights=None`` gives a randomly initialised model seeded with ``seed`` (tests, or a
    checkpoint that carries a full ``backbone_state``). Returns (model, weights name).
    Training code builds its network with this function too, so state-dict keys match.
    """
    if arch not in torchvision.models.list_models(module=torchvision.models):
        raise ValueError(f"unknown torchvision classification model {arch!r}")
    if weights is None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = torchvision.models.get_model(arch, weights=None)
        name = None
    else:
        member = resolve_weights(arch, weights)
        # The file is in torch's cache, so torchvision's own loader (key fix-ups included)
        # reads it from disk without touching the network.
        model = torchvision.models.get_model(arch, weights=member, progress=False)
        name = member.name
    return _strip_classifier(model, arch).eval(), name


class ProjectionHead(nn.Module):
    """Linear (or two-layer MLP) projection of pooled features, trained by the learning loop."""

    def __init__(self, in_dim: int, out_dim: int = 256, hidden_dim: int | None = None) -> None:
        super().__init__()
        self.in_dim, self.out_dim, self.hidden_dim = in_dim, out_dim, hidden_dim
        if hidden_dim:
            self.net: nn.Module = nn.Sequential(
                nn.Linear(in_dim, hidden_dim), nn.ReLU(inplace=True), nn.Linear(hidden_dim, out_dim)
            )
        else:
            self.net = nn.Linear(in_dim, out_dim)

    def args(self) -> dict[str, int | None]:
        return {"in_dim": self.in_dim, "out_dim": self.out_dim, "hidden_dim": self.hidden_dim}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class EmbeddingNet(nn.Module):
    """backbone -> (head) -> L2 normalise. The module both inference and training run."""

    def __init__(self, backbone: nn.Module, head: nn.Module | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = torch.flatten(self.backbone(x), 1)
        if self.head is not None:
            f = self.head(f)
        return nn.functional.normalize(f, dim=1)


# How far the compiled network may drift from the eager one (L2-normalised vectors;
# measured ~1e-7 for MobileNetV2).
INFERENCE_TOLERANCE = 1e-5


def optimize_for_inference(
    net: nn.Module, size: int, tolerance: float = INFERENCE_TOLERANCE
) -> Callable[[torch.Tensor], torch.Tensor]:
    """``net`` (eval mode) traced, frozen and optimised for CPU inference; ``net`` itself if
    that fails or changes its outputs by more than ``tolerance``.

    Freezing folds each BatchNorm into its convolution; ``torch.jit.optimize_for_inference``
    then runs the convolutions in oneDNN on pre-packed weights, with the activations kept in
    oneDNN's blocked layout between them. MobileNetV2 at 224 px, one thread, 2-core AVX2:
    ~12 ms per image instead of ~21 (eager). The traced graph accepts any batch size and
    image size. It is a copy: later changes to ``net``'s weights do not reach it.
    """
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    try:
        with warnings.catch_warnings(), torch.no_grad():
            # torch 2.x marks torch.jit as deprecated (FutureWarning); it still works.
            warnings.simplefilter("ignore", FutureWarning)
            traced = torch.jit.trace(net, x[:1], check_trace=False).eval()
            compiled = torch.jit.optimize_for_inference(torch.jit.freeze(traced))
            drift = (compiled(x) - net(x)).abs().max().item()
    except Exception as exc:  # an architecture the tracer or the passes do not support
        warnings.warn(f"embedder runs eagerly: compiling it failed ({exc})", RuntimeWarning, stacklevel=2)
        return net
    if not drift <= tolerance:
        warnings.warn(f"embedder runs eagerly: compiled model drifts by {drift:.1e}", RuntimeWarning, stacklevel=2)
        return net
    return compiled


class TorchvisionEmbedder:
    """A torchvision backbone, global-pooled, optionally projected, L2-normalised."""

    def __init__(
        self,
        arch: str = DEFAULT_ARCH,
        projection: ProjectionHead | None = None,
        preprocess: Preprocess | None = None,
        *,
        weights: str | None = "auto",
        backbone_state: Mapping[str, torch.Tensor] | None = None,
        seed: int = 0,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> None:
        self.arch = arch
        self.preprocess = preprocess or Preprocess()
        self.batch_size = batch_size
        backbone, self.weights_name = build_backbone(
            arch, weights=None if backbone_state is not None else weights, seed=seed
        )
        if backbone_state is not None:
            backbone.load_state_dict(backbone_state, strict=True)
            self.weights_name = "checkpoint"
        with torch.inference_mode():
            probe = backbone(torch.zeros(1, 3, self.preprocess.size, self.preprocess.size))
        self.backbone_dim = int(torch.flatten(probe, 1).shape[1])
        if projection is not None and projection.in_dim != self.backbone_dim:
            raise ValueError(f"head expects {projection.in_dim}-d input, {arch} gives {self.backbone_dim}")
        self.projection = projection
        self.net = EmbeddingNet(backbone, projection.eval() if projection else None).eval()
        self.dim = projection.out_dim if projection else self.backbone_dim
        self.version = self._version()
        # What embed() runs: a compiled copy of self.net, taken now as the version is (same
        # vectors); the version stays derived from the weights and the preprocessing only.
        self.inference_net = optimize_for_inference(self.net, self.preprocess.size)

    def _version(self) -> str:
        h = state_digest(self.net.backbone.state_dict())
        h.update(b"|head|")
        if self.projection is not None:
            h.update(json.dumps(self.projection.args(), sort_keys=True).encode())
            state_digest(self.projection.state_dict(), h)
        h.update(b"|pre|" + json.dumps(self.preprocess.spec(), sort_keys=True).encode())
        suffix = f"-p{self.dim}" if self.projection is not None else ""
        return f"{self.arch}{suffix}-{h.hexdigest()[:12]}"

    def embed(self, images: Sequence[Image.Image], batch_size: int | None = None) -> np.ndarray:
        n = len(images)
        if n == 0:
            return np.zeros((0, self.dim), np.float32)
        bs = batch_size or self.batch_size
        out = np.empty((n, self.dim), np.float32)
        with torch.inference_mode():
            for start in range(0, n, bs):
                x = self.preprocess.batch(images[start : start + bs])
                out[start : start + len(x)] = self.inference_net(x).numpy()
        assert out.shape == (n, self.dim)
        return out

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, **kwargs: Any) -> TorchvisionEmbedder:
        ckpt = load_checkpoint(path)
        head = None
        if ckpt.get("head_state") is not None:
            head = ProjectionHead(**ckpt["head_args"])
            head.load_state_dict(ckpt["head_state"], strict=True)
        return cls(
            ckpt["arch"],
            projection=head,
            preprocess=Preprocess.from_spec(ckpt["preprocess"]),
            weights=ckpt.get("weights") or "auto",
            backbone_state=ckpt.get("backbone_state"),
            **kwargs,
        )


# --------------------------------------------------------------------------- checkpoints


def save_checkpoint(
    path: str | os.PathLike,
    *,
    arch: str,
    preprocess: Preprocess,
    head: ProjectionHead | None,
    weights: str | None = None,
    backbone_state: Mapping[str, torch.Tensor] | None = None,
    args: Namespace | Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | None = None,
) -> Path:
    """Write an embedder checkpoint (atomically: temp file + rename).

    Format (a dict, loadable with ``torch.load(weights_only=True)``):
    ``format``, ``arch``, ``weights`` (torchvision weights name the backbone started from,
    used when ``backbone_state`` is absent), ``preprocess`` (Preprocess.spec()),
    ``head_args`` and ``head_state`` (None without a head), optional ``backbone_state``
    (full state dict of :func:`build_backbone`'s model), ``args`` (training arguments) and
    ``metrics`` (evaluation results), both plain JSON-able values.
    """
    if isinstance(args, Namespace):
        args = vars(args)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "arch": arch,
        "weights": weights,
        "preprocess": preprocess.spec(),
        "head_args": head.args() if head is not None else None,
        "head_state": {k: v.detach().cpu() for k, v in head.state_dict().items()} if head is not None else None,
        "backbone_state": {k: v.detach().cpu() for k, v in backbone_state.items()} if backbone_state else None,
        # Round-trip through JSON so the file stays loadable with weights_only=True.
        "args": json.loads(json.dumps(dict(args or {}), default=str)),
        "metrics": json.loads(json.dumps(dict(metrics or {}), default=str)),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    ckpt = torch.load(Path(path), map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a {CHECKPOINT_FORMAT} checkpoint")
    missing = {"arch", "preprocess", "head_state"} - set(ckpt)
    if missing:
        raise ValueError(f"{path} lacks {sorted(missing)}")
    if ckpt["head_state"] is not None and not ckpt.get("head_args"):
        raise ValueError(f"{path} has a head_state but no head_args")
    return ckpt


# --------------------------------------------------------------------------- factory


def make_embedder(name: str = DEFAULT_ARCH, **kwargs: Any) -> Embedder:
    """``"pixels"`` (or ``"pixels:<size>"``), a torchvision arch (``"mobilenet_v2"``,
    ``"resnet50"``, ...), or a path to a checkpoint written by :func:`save_checkpoint`."""
    if name == "pixels" or name.startswith("pixels:"):
        size = int(name.split(":", 1)[1]) if ":" in name else 32
        return PixelEmbedder(size=size)
    if os.sep in name or name.endswith((".pt", ".pth", ".ckpt")) or Path(name).is_file():
        if not Path(name).is_file():
            raise WeightsUnavailable(f"embedder checkpoint {name} does not exist")
        return TorchvisionEmbedder.from_checkpoint(name, **kwargs)
    return TorchvisionEmbedder(name, **kwargs)


__all__ = [
    "CHECKPOINT_FORMAT",
    "Embedder",
    "EmbeddingNet",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "PixelEmbedder",
    "Preprocess",
    "ProjectionHead",
    "TorchvisionEmbedder",
    "WeightsUnavailable",
    "build_backbone",
    "checkpoint_dir",
    "load_checkpoint",
    "make_embedder",
    "optimize_for_inference",
    "resolve_weights",
    "save_checkpoint",
    "state_digest",
]
