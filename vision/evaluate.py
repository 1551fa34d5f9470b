"""Search quality and latency over a catalog interchange folder.

Layout (shared/datasets/grocery-store/README.md): ``catalog/<key>/*`` (required),
``reviews/<key>/*`` and ``queries/<key>/*`` (optional), ``products.csv`` (optional,
``key,title,...``). A throwaway index is built from catalog/ (plus reviews/ unless
``catalog_only``) and every query photo goes through the same
:meth:`vision.pipeline.SearchPipeline.run` that serves searches. Recall@k and MRR are at
the product level: a query is right at rank r when its folder's product is the r-th
product returned.

Gallery embeddings can be cached on disk, keyed by (embedder version, absolute path,
mtime, size), so repeated runs over an unchanged folder only embed the queries.
"""

from __future__ import annotations

import csv
import json
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from vision.detect import make_detector
from vision.embed import Embedder, make_embedder
from vision.imageio import ImageError, decode_image
from vision.index import VectorIndex
from vision.pipeline import SearchConfig, SearchPipeline
from vision.weights import model_dir

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
RECALL_AT = (1, 5, 10)
STAGES = ("decode", "detect", "embed", "search", "total")

Progress = Callable[[str, int, int], None]  # (stage, done, total)


# --------------------------------------------------------------------------- the folder


@dataclass(frozen=True)
class InterchangeFolder:
    root: Path
    products: list[str]  # catalog/ keys, sorted
    catalog: list[tuple[Path, str]]  # (file, product key)
    reviews: list[tuple[Path, str]]
    queries: list[tuple[Path, str]]
    titles: dict[str, str] = field(default_factory=dict)


def _images_by_key(root: Path) -> list[tuple[Path, str]]:
    if not root.is_dir():
        return []
    out = []
    for key_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for f in sorted(key_dir.iterdir()):
            if f.is_file() and not f.name.startswith(".") and f.suffix.lower() in IMAGE_SUFFIXES:
                out.append((f, key_dir.name))
    return out


def scan_folder(folder: str | os.PathLike) -> InterchangeFolder:
    root = Path(folder).resolve()
    if not (root / "catalog").is_dir():
        raise FileNotFoundError(f"{root} has no catalog/ folder (see the interchange format)")
    catalog = _images_by_key(root / "catalog")
    products = sorted({key for _, key in catalog})
    titles: dict[str, str] = {}
    if (root / "products.csv").is_file():
        with open(root / "products.csv", newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                if row.get("key"):
                    titles[row["key"]] = row.get("title") or row["key"]
    return InterchangeFolder(
        root=root,
        products=products,
        catalog=catalog,
        reviews=_images_by_key(root / "reviews"),
        queries=_images_by_key(root / "queries"),
        titles=titles,
    )


# --------------------------------------------------------------------------- embedding cache


class EmbeddingCache:
    """One ``<version>.npz`` per embedder version: keys ``path|mtime_ns|size`` -> vector.

    Writes merge with what is on disk and replace the file atomically, so two runs that
    share a cache lose at most each other's new entries, never the file.
    """

    def __init__(self, directory: str | os.PathLike, version: str, dim: int) -> None:
        self.path = Path(directory) / f"{version}.npz"
        self.dim = dim
        self._mem: dict[str, np.ndarray] = self._read()
        self._dirty = False

    @staticmethod
    def key(path: Path) -> str:
        st = path.stat()
        return f"{path.resolve()}|{st.st_mtime_ns}|{st.st_size}"

    def _read(self) -> dict[str, np.ndarray]:
        if not self.path.is_file():
            return {}
        try:
            with np.load(self.path, allow_pickle=False) as z:
                keys, vecs = z["keys"], z["vectors"]
        except (OSError, ValueError, KeyError):
            return {}  # a damaged cache is only a slower run
        if vecs.ndim != 2 or vecs.shape[1] != self.dim:
            return {}
        return dict(zip(keys.tolist(), vecs.astype(np.float32)))

    def get(self, path: Path) -> np.ndarray | None:
        return self._mem.get(self.key(path))

    def put(self, path: Path, vector: np.ndarray) -> None:
        assert vector.shape == (self.dim,), vector.shape
        self._mem[self.key(path)] = vector.astype(np.float32)
        self._dirty = True

    def save(self) -> None:
        if not self._dirty:
            return
        merged = {**self._read(), **self._mem}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.stem}.{os.getpid()}.tmp.npz")
        keys = np.array(list(merged), dtype=np.str_)
        vecs = np.stack(list(merged.values())) if merged else np.zeros((0, self.dim), np.float32)
        np.savez(tmp, keys=keys, vectors=vecs)
        os.replace(tmp, self.path)
        self._dirty = False


def default_cache_dir() -> Path:
    """``<model dir>/embedding-cache`` (vision.weights decides where models live)."""
    return Path(model_dir()) / "embedding-cache"


def embed_files(
    paths: Sequence[Path],
    embedder: Embedder,
    *,
    max_side: int = 1024,
    batch_size: int = 32,
    cache: EmbeddingCache | None = None,
    progress: Progress | None = None,
) -> tuple[np.ndarray, list[int]]:
    """Whole-image embeddings of files, batched; returns (vectors [n, dim], failed rows).

    Rows of files that could not be decoded are left zero and listed in ``failed``.
    Gallery images are embedded whole, as ingestion does (catalog and review photos are
    already framed on the product).
    """
    out = np.zeros((len(paths), embedder.dim), np.float32)
    failed: list[int] = []
    todo = []
    for i, p in enumerate(paths):
        hit = cache.get(p) if cache is not None else None
        if hit is not None:
            out[i] = hit
        else:
            todo.append(i)
    done = len(paths) - len(todo)
    if progress:
        progress("gallery", done, len(paths))
    for start in range(0, len(todo), batch_size):
        rows, images = [], []
        for i in todo[start : start + batch_size]:
            try:
                images.append(decode_image(paths[i], max_side=max_side)[0])
                rows.append(i)
            except ImageError:
                failed.append(i)
        if images:
            vecs = embedder.embed(images)
            for i, v in zip(rows, vecs):
                out[i] = v
                if cache is not None:
                    cache.put(paths[i], v)
        done += len(todo[start : start + batch_size])
        if progress:
            progress("gallery", done, len(paths))
    if cache is not None:
        cache.save()
    return out, failed


# --------------------------------------------------------------------------- the report


@dataclass
class QueryOutcome:
    path: str
    product: str
    rank: int | None  # 1-based product rank of the right answer; None if not returned
    hits: list[tuple[str, float, str]]  # (product key, score, best gallery image path)
    box: tuple[float, float, float, float, float, str]  # chosen box x1,y1,x2,y2,score,label
    timings_ms: dict[str, float]


@dataclass
class EvaluationReport:
    folder: str
    embedder_version: str
    detector: str
    catalog_only: bool
    config: dict[str, Any]
    n_products: int
    n_gallery_images: int
    n_queries: int
    recall: dict[int, float]
    mrr: float
    latency_ms: dict[str, dict[str, float]]  # stage -> {"p50", "p95"}
    crop_rate: float  # fraction of queries embedded on a detector box, not the whole image
    gallery_embed_s: float
    gallery_from_cache: int
    skipped_files: list[str] = field(default_factory=list)
    queries: list[QueryOutcome] = field(default_factory=list)

    def to_dict(self, include_queries: bool = False) -> dict[str, Any]:
        d = asdict(self)
        d["recall"] = {f"@{k}": v for k, v in self.recall.items()}
        if not include_queries:
            d.pop("queries")
        return d

    def to_json(self, include_queries: bool = False, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(include_queries), indent=indent, default=str)

    def summary_table(self) -> str:
        """A markdown table (one row) with the headline numbers."""
        head = ["embedder", "detector", "gallery", "queries", *[f"R@{k}" for k in RECALL_AT], "MRR"]
        head += ["crop rate", "embed p50 ms", "detect p50 ms", "total p50 ms"]
        lat = self.latency_ms
        row = [
            self.embedder_version,
            self.detector,
            f"{'catalog' if self.catalog_only else 'catalog+reviews'} ({self.n_gallery_images})",
            str(self.n_queries),
            *[f"{self.recall[k]:.3f}" for k in RECALL_AT],
            f"{self.mrr:.3f}",
            f"{self.crop_rate:.2f}",
            f"{lat['embed']['p50']:.1f}",
            f"{lat['detect']['p50']:.1f}",
            f"{lat['total']['p50']:.1f}",
        ]
        return "\n".join(["| " + " | ".join(head) + " |", "|" + "---|" * len(head), "| " + " | ".join(row) + " |"])


def _percentiles(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {"p50": float("nan"), "p95": float("nan")}
    arr = np.asarray(values, np.float64)
    return {"p50": float(np.percentile(arr, 50)), "p95": float(np.percentile(arr, 95))}


# --------------------------------------------------------------------------- evaluation


def evaluate_folder(
    folder: str | os.PathLike,
    *,
    embedder: Embedder | str,
    detector: Any | str | None = None,
    catalog_only: bool = False,
    config: SearchConfig | None = None,
    progress: Progress | None = None,
    cache_dir: str | os.PathLike | None = None,
    batch_size: int = 32,
    max_queries: int | None = None,
) -> EvaluationReport:
    """Build a throwaway index from the folder's gallery and run every query through
    SearchPipeline.run.

    ``detector``: an object, a name for make_detector, or None for ``config.detector``.
    ``max_queries``: evaluate an evenly spread subset (quick checks); None = all.
    """
    config = config or SearchConfig()
    if isinstance(detector, str):
        config = replace(config, detector=detector)
        detector = None
    det = make_detector(config.detector, **config.detector_options()) if detector is None else detector
    detector_name = getattr(det, "name", type(det).__name__)
    emb = make_embedder(embedder) if isinstance(embedder, str) else embedder
    # The report's config says what ran; at least 10 products per query so recall@10 is measurable.
    config = replace(config, detector=detector_name, k=max(config.k, max(RECALL_AT)))

    data = scan_folder(folder)
    if not data.catalog:
        raise ValueError(f"{data.root}/catalog has no images")
    product_id = {key: i for i, key in enumerate(data.products)}
    gallery = data.catalog + ([] if catalog_only else [(p, k) for p, k in data.reviews if k in product_id])

    cache = EmbeddingCache(cache_dir, emb.version, emb.dim) if cache_dir is not None else None
    cached_before = sum(1 for p, _ in gallery if cache is not None and cache.get(p) is not None)
    t = time.perf_counter()
    vectors, failed = embed_files(
        [p for p, _ in gallery], emb, max_side=config.max_side, batch_size=batch_size, cache=cache, progress=progress
    )
    gallery_embed_s = time.perf_counter() - t
    keep = np.setdiff1d(np.arange(len(gallery)), np.asarray(failed, dtype=np.int64))
    ids = keep.astype(np.int64)
    index = VectorIndex.build(np.ascontiguousarray(vectors[keep]), ids, version=emb.version)
    image_to_product = {int(i): product_id[gallery[i][1]] for i in ids}
    pipeline = SearchPipeline(det, emb, index, image_to_product, config)

    queries = [(p, k) for p, k in data.queries if k in product_id]
    skipped = [str(gallery[i][0]) for i in failed]
    skipped += [str(p) for p, k in data.queries if k not in product_id]  # product not in catalog
    if max_queries is not None and len(queries) > max_queries:
        step = len(queries) / max_queries
        queries = [queries[int(i * step)] for i in range(max_queries)]

    outcomes: list[QueryOutcome] = []
    for n, (path, key) in enumerate(queries):
        try:
            result = pipeline.run(path.read_bytes())
        except ImageError:
            skipped.append(str(path))
            if progress:
                progress("queries", n + 1, len(queries))
            continue
        ranked = [h.product_id for h in result.hits]
        truth = product_id[key]
        b = result.box
        outcomes.append(
            QueryOutcome(
                path=str(path),
                product=key,
                rank=ranked.index(truth) + 1 if truth in ranked else None,
                hits=[(data.products[h.product_id], h.score, str(gallery[h.image_id][0])) for h in result.hits],
                box=(b.x1, b.y1, b.x2, b.y2, b.score, b.label),
                timings_ms=result.timings_ms,
            )
        )
        if progress:
            progress("queries", n + 1, len(queries))

    nq = len(outcomes)
    ranks = [o.rank for o in outcomes]
    recall = {k: (sum(1 for r in ranks if r is not None and r <= k) / nq if nq else 0.0) for k in RECALL_AT}
    mrr = sum(1.0 / r for r in ranks if r is not None) / nq if nq else 0.0
    latency = {s: _percentiles([o.timings_ms[s] for o in outcomes]) for s in STAGES}
    crop_rate = sum(1 for o in outcomes if o.box[5] != "image") / nq if nq else 0.0
    return EvaluationReport(
        folder=str(data.root),
        embedder_version=emb.version,
        detector=detector_name,
        catalog_only=catalog_only,
        config=config.to_dict(),
        n_products=len(data.products),
        n_gallery_images=int(len(ids)),
        n_queries=nq,
        recall=recall,
        mrr=mrr,
        latency_ms=latency,
        crop_rate=crop_rate,
        gallery_embed_s=gallery_embed_s,
        gallery_from_cache=cached_before,
        skipped_files=skipped,
        queries=outcomes,
    )


# --------------------------------------------------------------------------- example grid

_GREEN, _RED, _BOX = (30, 170, 60), (210, 40, 40), (255, 200, 0)


def _thumb(path: str, size: int) -> tuple[Image.Image, float, tuple[int, int]]:
    """Letterboxed ``size`` x ``size`` thumbnail, and the map from original pixels into it
    (scale, offset)."""
    img, info = decode_image(path, max_side=4 * size)
    s = size / max(img.size)
    th = img.resize((max(1, round(img.width * s)), max(1, round(img.height * s))))
    canvas = Image.new("RGB", (size, size), (245, 245, 245))
    offset = ((size - th.width) // 2, (size - th.height) // 2)
    canvas.paste(th, offset)
    return canvas, th.width / info.width, offset


def render_examples(
    report: EvaluationReport,
    out_path: str | os.PathLike,
    *,
    n: int = 8,
    top: int = 5,
    thumb: int = 128,
    seed: int = 0,
    failures_only: bool = False,
) -> Path:
    """A PNG grid: one row per sampled query (the crop searched with, if any, framed in
    yellow), then its top ``top`` hits, framed green when right and red when wrong."""
    pool = [o for o in report.queries if not failures_only or o.rank != 1]
    rows = random.Random(seed).sample(pool, min(n, len(pool)))
    pad, label_h, border = 6, 14, 4
    cell = thumb + 2 * border
    grid = Image.new("RGB", (pad + (top + 1) * (cell + pad), pad + max(1, len(rows)) * (cell + label_h + pad)), "white")
    draw = ImageDraw.Draw(grid)
    for r, o in enumerate(rows):
        y = pad + r * (cell + label_h + pad)
        q, k, (ox, oy) = _thumb(o.path, thumb)
        if o.box[5] != "image":  # a yellow frame means the search used this crop
            x1, y1, x2, y2 = (v * k for v in o.box[:4])
            ImageDraw.Draw(q).rectangle([ox + x1, oy + y1, ox + x2 - 1, oy + y2 - 1], outline=_BOX, width=2)
        grid.paste(q, (pad + border, y + border))
        draw.text((pad, y + cell), f"{o.product[:22]}", fill="black")
        for c, (key, score, img_path) in enumerate(o.hits[:top]):
            x = pad + (c + 1) * (cell + pad)
            draw.rectangle([x, y, x + cell - 1, y + cell - 1], fill=_GREEN if key == o.product else _RED)
            grid.paste(_thumb(img_path, thumb)[0], (x + border, y + border))
            draw.text((x, y + cell), f"{c + 1}. {score:.2f} {key[:14]}", fill="black")
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    grid.save(out)
    return out


__all__ = [
    "EmbeddingCache",
    "EvaluationReport",
    "InterchangeFolder",
    "QueryOutcome",
    "default_cache_dir",
    "embed_files",
    "evaluate_folder",
    "render_examples",
    "scan_folder",
]
