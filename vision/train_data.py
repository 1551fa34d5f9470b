"""What the embedder's training sees and how it is scored: labelled photos, their crops,
the batches of P products x M photos, the held-out split and product-level recall.

vision.train runs the training on these; search.training turns the database into
:class:`Photo` and :class:`HardNegatives` lists.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image
from torchvision import transforms as T

from vision.embed import Preprocess
from vision.imageio import ImageError, decode_image

if TYPE_CHECKING:
    from vision.train import TrainConfig

Progress = Callable[[str, int, int], None]  # (stage, done, total)

# Photos are decoded at most this size: the crops are taken from a 256-px short side.
DECODE_MAX_SIDE = 512
KINDS = ("catalog", "review", "query")
# One photo in HELD_OUT_EVERY is kept out of training to evaluate a new version before it
# is rolled out, chosen by the file's SHA-256 so the split is the same on every platform.
HELD_OUT_EVERY = 10


def is_held_out(sha256_hex: str) -> bool:
    return int(sha256_hex[:8], 16) % HELD_OUT_EVERY == 0


@dataclass(frozen=True)
class Photo:
    source: str | Path | bytes  # a file or its bytes
    label: int  # the product
    kind: str = "review"  # one of KINDS

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")


@dataclass(frozen=True)
class HardNegatives:
    positive: int  # the clicked product
    negatives: tuple[int, ...]  # shown above it, not clicked


def augmentation(preprocess: Preprocess, crop_scale: float = 0.35, strength: str = "light") -> T.Compose:
    """Augmentation for shoppers' photos. "light": a random part of the product (at least
    ``crop_scale`` of the photo), a little light and colour change. "strong" adds what a
    phone photo taken on another visit brings: a tilted view (perspective), stronger light
    and white-balance changes, and out-of-focus blur. Hue moves little in both: colour
    is what tells some products apart (apple varieties, juice flavours). No flips:
    packaging text is never mirrored in a photo."""
    crop = T.RandomResizedCrop(preprocess.size, scale=(crop_scale, 1.0), ratio=(3 / 4, 4 / 3), antialias=True)
    if strength == "light":
        return T.Compose([T.Resize(preprocess.resize, antialias=True), crop, T.ColorJitter(0.25, 0.25, 0.2, 0.02)])
    return T.Compose(
        [
            T.Resize(preprocess.resize, antialias=True),
            T.RandomPerspective(distortion_scale=0.25, p=0.5),
            crop,
            T.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.3, hue=0.03),
            T.RandomApply([T.GaussianBlur(9, sigma=(0.1, 2.0))], p=0.3),
        ]
    )


def _skipped_name(photo: Photo, i: int) -> str:
    return str(photo.source)[:200] if not isinstance(photo.source, bytes) else f"<bytes #{i}>"


def decode_all(
    photos: Sequence[Photo], preprocess: Preprocess, progress: Progress | None = None
) -> tuple[list[Image.Image], list[int], list[str]]:
    """Every photo decoded once at the augmentation's starting size (short side ``resize``)."""
    resize = T.Resize(preprocess.resize, antialias=True)
    images, kept, skipped = [], [], []
    for i, photo in enumerate(photos):
        try:
            images.append(resize(decode_image(photo.source, max_side=DECODE_MAX_SIDE)[0]))
            kept.append(i)
        except (ImageError, OSError):
            skipped.append(_skipped_name(photo, i))
        if progress:
            progress("decode", i + 1, len(photos))
    if not kept:
        raise ValueError("no photo could be decoded")
    return images, kept, skipped


def cache_views(
    photos: Sequence[Photo],
    run_frozen: Callable[[torch.Tensor], torch.Tensor],
    preprocess: Preprocess,
    cfg: TrainConfig,
    progress: Progress | None = None,
) -> tuple[torch.Tensor, list[int], list[str]]:
    """Decode every photo once; run its views through the frozen blocks.

    Returns (activations [n_ok * views, C, H, W] fp16, indices of the photos kept,
    sources skipped). Rows ``i * views .. i * views + views - 1`` belong to kept photo i.
    """
    rng_state = torch.random.get_rng_state()
    torch.manual_seed(cfg.seed)
    plain, augment, to_tensor = (
        preprocess.geometry_transform(),
        augmentation(preprocess, cfg.crop_scale, cfg.augment),
        preprocess.tensor_transform(),
    )
    chunks: list[torch.Tensor] = []
    kept: list[int] = []
    skipped: list[str] = []
    batch: list[torch.Tensor] = []

    def flush() -> None:
        if batch:
            with torch.no_grad():
                chunks.append(run_frozen(torch.stack(batch)).to(torch.float16))
            batch.clear()

    try:
        for i, photo in enumerate(photos):
            try:
                img, _ = decode_image(photo.source, max_side=DECODE_MAX_SIDE)
            except (ImageError, OSError):
                skipped.append(_skipped_name(photo, i))
                continue
            kept.append(i)
            batch.append(to_tensor(plain(img)))
            batch.extend(to_tensor(augment(img)) for _ in range(cfg.views - 1))
            if len(batch) >= 64:
                flush()
            if progress:
                progress("cache", i + 1, len(photos))
        flush()
    finally:
        torch.random.set_rng_state(rng_state)
    if not kept:
        raise ValueError("no photo could be decoded")
    return torch.cat(chunks), kept, skipped


class BatchSampler:
    """P classes x M photos per batch, each photo as one of its cached views.

    A class with a catalog image brings one of them with probability ``catalog_share``
    (studio shots are what catalog-only search compares shoppers' photos with); a share
    of the batches starts from a logged hard-negative group; once ``neighbours`` is set
    (each class's look-alikes, :func:`neighbour_classes`), a share ``neighbour_share`` of
    the others is made of groups of a class and its look-alikes.
    """

    def __init__(self, labels: Sequence[int], kinds: Sequence[str], hard: Sequence[HardNegatives], cfg: TrainConfig):
        self.cfg = cfg
        self.rng = random.Random(cfg.seed)
        self.by_class: dict[int, list[int]] = defaultdict(list)
        self.catalog: dict[int, list[int]] = defaultdict(list)
        for i, (label, kind) in enumerate(zip(labels, kinds)):
            self.by_class[label].append(i)
            if kind == "catalog":
                self.catalog[label].append(i)
        self.classes = sorted(self.by_class)
        if len(self.classes) < 2:
            raise ValueError("training needs photos of at least two products")
        self.hard = [h for h in hard if h.positive in self.by_class and any(n in self.by_class for n in h.negatives)]
        self.neighbours: dict[int, list[int]] = {}

    def _classes(self) -> list[int]:
        p = min(self.cfg.classes_per_batch, len(self.classes))
        chosen: list[int] = []
        if self.hard and self.rng.random() < self.cfg.hard_negative_share:
            group = self.rng.choice(self.hard)
            chosen = [group.positive] + [n for n in dict.fromkeys(group.negatives) if n in self.by_class]
            chosen = chosen[:p]
        elif self.neighbours and self.cfg.neighbour_share and self.rng.random() < self.cfg.neighbour_share:
            for seed in self.rng.sample(self.classes, len(self.classes)):
                if len(chosen) >= p:
                    break
                if seed not in chosen:
                    group = [c for c in self.neighbours.get(seed, []) if c not in chosen]
                    chosen += [seed] + group[: self.cfg.neighbours]
            chosen = chosen[:p]
        rest = [c for c in self.classes if c not in set(chosen)]
        return chosen + self.rng.sample(rest, p - len(chosen))

    def batch(self) -> tuple[list[int], list[int]]:
        """(rows into the activation cache, labels)."""
        rows, labels = [], []
        m, views = self.cfg.per_class, self.cfg.rows_per_photo
        for c in self._classes():
            pool = self.by_class[c]
            photos = self.rng.sample(pool, m) if len(pool) >= m else [self.rng.choice(pool) for _ in range(m)]
            if self.catalog[c] and self.rng.random() < self.cfg.catalog_share:
                photos[0] = self.rng.choice(self.catalog[c])
            for ph in photos:
                rows.append(ph * views + self.rng.randrange(views))
                labels.append(c)
        return rows, labels


def class_centroids(vectors: np.ndarray, labels: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """(the labels in ascending order, their mean L2-normalised vectors, L2-normalised)."""
    labels = np.asarray(labels)
    classes = np.unique(labels)
    rows = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    centroids = np.stack([rows[labels == c].mean(0) for c in classes])
    return classes, centroids / np.linalg.norm(centroids, axis=1, keepdims=True)


def neighbour_classes(vectors: np.ndarray, labels: Sequence[int], k: int) -> dict[int, list[int]]:
    """Each label's ``k`` nearest other labels, by the cosine of their mean vectors."""
    classes, centroids = class_centroids(vectors, labels)
    sims = centroids @ centroids.T
    np.fill_diagonal(sims, -np.inf)
    order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return {int(c): classes[row].tolist() for c, row in zip(classes, order)}


def recall_at(
    queries: np.ndarray,
    query_labels: Sequence[int],
    gallery: np.ndarray,
    gallery_labels: Sequence[int],
    ks: Sequence[int] = (1, 5),
) -> dict[str, float]:
    """Product-level recall@k: a query is right at k when its product is among the first k
    distinct products of its nearest gallery images (cosine; rows L2-normalised)."""
    if len(queries) == 0:
        return {f"recall@{k}": float("nan") for k in ks} | {"queries": 0}
    gallery_labels = np.asarray(gallery_labels)
    sims = queries @ gallery.T
    order = np.argsort(-sims, axis=1)
    hits = dict.fromkeys(ks, 0)
    for row, label in zip(order, query_labels):
        products = list(dict.fromkeys(gallery_labels[row[: max(ks) * 20]].tolist()))
        for k in ks:
            hits[k] += label in products[:k]
    return {f"recall@{k}": round(hits[k] / len(queries), 4) for k in ks} | {"queries": len(queries)}


def embed_photos(embedder, photos: Sequence[Photo], batch_size: int = 16) -> tuple[np.ndarray, list[int]]:
    """Whole-photo vectors of ``photos`` (decoded as ingestion does); (vectors, kept rows)."""
    vectors, kept = [], []
    for start in range(0, len(photos), batch_size):
        images: list[Image.Image] = []
        for i, photo in enumerate(photos[start : start + batch_size], start):
            try:
                images.append(decode_image(photo.source, max_side=DECODE_MAX_SIDE)[0])
                kept.append(i)
            except (ImageError, OSError):
                continue
        if images:
            vectors.append(embedder.embed(images))
    dim = embedder.dim
    return (np.concatenate(vectors) if vectors else np.zeros((0, dim), np.float32)), kept


__all__ = [
    "DECODE_MAX_SIDE",
    "HELD_OUT_EVERY",
    "KINDS",
    "BatchSampler",
    "HardNegatives",
    "Photo",
    "augmentation",
    "cache_views",
    "decode_all",
    "embed_photos",
    "is_held_out",
    "neighbour_classes",
    "recall_at",
]
