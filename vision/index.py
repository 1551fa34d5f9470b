"""The vector index layer: FAISS indexes keyed by image primary keys.

An index is derived data (the database holds every vector), so this module only has to
make it fast, safe to swap and impossible to load half-written:

* ids are the images' primary keys (int64, IndexIDMap2 semantics): ``add`` replaces an
  id that is already there, ``remove`` takes ids, ``search`` returns ids with -1 where
  fewer than ``k`` vectors exist;
* the metric is inner product on L2-normalised vectors, so a score is a cosine;
* ``save`` writes a temp file in the target folder and ``os.replace``-s it, and the file
  ends with a trailer (metadata + SHA-256) so that ``load`` refuses a truncated or
  corrupted file with :class:`IndexCorrupt` instead of serving garbage
  (:mod:`vision.index_file`);
* the index family comes from an index_factory string chosen by catalog size
  (:func:`choose_factory`); :class:`BinaryVectorIndex` is the Hamming variant.

Not thread-safe for writes: a process that serves searches should load a new version
into a new object and swap the reference (searches on one object may run concurrently;
faiss releases the GIL).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, TypeVar

import faiss
import numpy as np

from vision.index_file import FORMAT, IndexCorrupt, read_index_file, write_index_file

__all__ = [
    "FLAT_MAX", "IVF_FLAT_MAX", "BinaryVectorIndex", "IndexCorrupt", "VectorIndex",
    "binarize", "choose_binary_factory", "choose_factory", "group_by_product", "load_index",
]  # fmt: skip

# Exact search costs 68 ms per query at 1M x 256 on one core (benchmarks/faiss_bench.py),
# so about 3.5 ms at 50k: inside the search budget, and no training. Above it, IVF.
FLAT_MAX = 50_000
# IVF-Flat keeps every vector uncompressed (4*d bytes each: 4 GB at 4M x 256). Above this
# the index moves to PQ codes (64 bytes per vector) and accepts a lower recall.
IVF_FLAT_MAX = 4_000_000
# nlist = NLIST_PER_SQRT_N * sqrt(N), the low end of faiss's 4..16 guideline: training
# stays cheap on one core and the coarse quantizer too (4096 x 256 per query at 1M).
# Measured at 1M x 256 (IVF4096, one core, benchmarks/faiss_bench.py): build ~100 s CPU;
# nprobe 15 -> recall@10 0.97 at 0.6 ms/query, 26 -> 0.99 at 1.1 ms; on a harder variant
# of the data 57 -> 0.97 at 1.7 ms. 128 probes cost 3.2 ms: the 5 ms budget has room.
NLIST_PER_SQRT_N = 4
MAX_NLIST = 65_536
# faiss warns below 39 training points per centroid and samples 256 per centroid itself;
# 64 caps k-means at 262k points for 4096 lists.
MIN_TRAIN_PER_LIST = 39
TRAIN_PER_LIST = 64
# Until tune_nprobe runs on real queries: 1/64 of the lists (64 of 4096 at 1M) gave
# recall@10 ~1.0 at 1.6 ms/query in the benchmark; a safe, not a tight, default.
DEFAULT_NPROBE_DIVISOR = 64
# float32 normalisation is accurate to ~1e-7; anything further off is a caller's bug
# (an unnormalised or zero embedding), and would make scores stop being cosines.
NORM_TOLERANCE = 1e-3

# --------------------------------------------------------------------------- factories


def _nlist(n: int) -> int:
    """NLIST_PER_SQRT_N * sqrt(n), as a power of two, with enough training points."""
    target = NLIST_PER_SQRT_N * math.sqrt(max(n, 1))
    nlist = 1 << max(0, round(math.log2(target)))
    while nlist > 1 and nlist * MIN_TRAIN_PER_LIST > n:
        nlist //= 2
    return min(nlist, MAX_NLIST)


def choose_factory(n: int, d: int) -> str:
    """An index_factory string for ``n`` vectors of dimension ``d`` (inner product).

    * n < FLAT_MAX (50k): ``IDMap2,Flat``, exact;
    * n < IVF_FLAT_MAX (4M): ``IVF{nlist},Flat``, nlist = 4*sqrt(n) as a power of two
      (1M -> 4096), nprobe tuned with :func:`tune_nprobe`;
    * larger: ``OPQ{m}_{d/2},IVF{nlist},PQ{m}``: an OPQ rotation that also halves the
      dimension (the PCA step), then m-byte PQ codes; about m bytes per vector.
    """
    if n < 0 or d <= 0:
        raise ValueError(f"n must be >= 0 and d > 0, got n={n}, d={d}")
    if n < FLAT_MAX:
        return "IDMap2,Flat"
    nlist = _nlist(n)
    if n < IVF_FLAT_MAX:
        return f"IVF{nlist},Flat"
    d_out = d // 2 if d >= 128 and d % 2 == 0 else d
    m = next((m for m in (64, 32, 16, 8, 4) if d_out % m == 0 and d_out // m >= 2), None)
    if m is None:  # an odd dimension: no OPQ/PQ split fits, stay uncompressed
        return f"IVF{nlist},Flat"
    return f"OPQ{m}_{d_out},IVF{nlist},PQ{m}"


def choose_binary_factory(n: int, bits: int) -> str:
    """``BFlat`` (a popcount scan: ~32 MB per query at 1M x 256 bits) up to 2M codes,
    ``BIVF{nlist}`` above."""
    if bits <= 0 or bits % 8:
        raise ValueError(f"bits must be a positive multiple of 8, got {bits}")
    return "BFlat" if n < 2_000_000 else f"BIVF{_nlist(n)}"


# ------------------------------------------------------------------------- validation


def _check_ids(ids: np.ndarray, n: int, *, unique: bool = True) -> np.ndarray:
    ids = np.asarray(ids)
    if ids.ndim != 1 or ids.shape[0] != n:
        raise ValueError(f"ids must have shape ({n},), got {ids.shape}")
    if ids.dtype.kind not in "iu":
        raise ValueError(f"ids must be integers, got {ids.dtype}")
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    if n and ids.min() < 0:
        raise ValueError("ids must be >= 0 (-1 means 'no result')")
    if unique and np.unique(ids).shape[0] != n:
        raise ValueError("ids must be unique within one call")
    return ids


def _check_float(x: np.ndarray, d: int | None, name: str) -> np.ndarray:
    if not isinstance(x, np.ndarray):
        raise ValueError(f"{name} must be a numpy array, got {type(x).__name__}")
    if x.dtype != np.float32:
        raise ValueError(f"{name} must be float32, got {x.dtype}")
    if x.ndim != 2 or (d is not None and x.shape[1] != d):
        raise ValueError(f"{name} must have shape (n, {d or 'd'}), got {x.shape}")
    if x.size:
        if not np.isfinite(x).all():
            raise ValueError(f"{name} contains NaN or inf")
        norms = np.einsum("ij,ij->i", x, x)
        if np.abs(norms - 1.0).max() > 2 * NORM_TOLERANCE:
            raise ValueError(f"{name} must be L2-normalised (inner product = cosine)")
    return np.ascontiguousarray(x)


def _check_k(k: int) -> None:
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")


# ------------------------------------------------------------------------- the indexes

_T = TypeVar("_T", bound="_IndexBase")


class _IndexBase:
    """Ids, IVF knobs, add/remove/search and persistence, shared by both kinds."""

    kind: ClassVar[str]

    def __init__(self, index, *, factory: str, version: str = "") -> None:
        self._index = index  # the faiss object; ``faiss_index`` exposes it to benchmarks
        self.factory = factory
        self.version = version

    # Subclass hooks: how inputs become faiss rows, how an index is made, scored,
    # found to be IVF, written and read.
    _write: ClassVar[Callable]
    _read: ClassVar[Callable]

    @classmethod
    def _encode(cls, x: np.ndarray, dim: int | None, name: str) -> np.ndarray: ...

    @classmethod
    def _make(cls, rows: np.ndarray, factory: str | None) -> tuple[Any, str]: ...

    def _scores(self, distances: np.ndarray) -> np.ndarray: ...

    def _extract_ivf(self): ...

    @property
    def faiss_index(self):
        return self._index

    @property
    def dim(self) -> int:
        """Vector dimension (bits, for the binary index)."""
        return int(self._index.d)

    def ids(self) -> np.ndarray:
        """Every id stored in the index (int64, in storage order)."""
        if hasattr(self._index, "id_map"):  # IDMap / IDMap2 wrappers
            return faiss.vector_to_array(self._index.id_map).astype(np.int64)
        lists = self._extract_ivf().invlists
        parts = [
            faiss.rev_swig_ptr(lists.get_ids(i), lists.list_size(i)).copy()
            for i in range(lists.nlist)
            if lists.list_size(i)
        ]
        return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)

    @property
    def ntotal(self) -> int:
        return int(self._index.ntotal)

    @property
    def is_ivf(self) -> bool:
        return self._extract_ivf() is not None

    @property
    def nlist(self) -> int | None:
        ivf = self._extract_ivf()
        return None if ivf is None else int(ivf.nlist)

    @property
    def nprobe(self) -> int | None:
        """Lists visited per query (None unless IVF): the speed/recall knob."""
        ivf = self._extract_ivf()
        return None if ivf is None else int(ivf.nprobe)

    @nprobe.setter
    def nprobe(self, value: int) -> None:
        ivf = self._extract_ivf()
        if ivf is None:
            raise ValueError(f"nprobe only applies to IVF indexes, not {self.factory!r}")
        if not 1 <= int(value) <= ivf.nlist:
            raise ValueError(f"nprobe must be in [1, {ivf.nlist}], got {value}")
        ivf.nprobe = int(value)

    @classmethod
    def build(
        cls: type[_T],
        vectors: np.ndarray,
        ids: np.ndarray,
        factory: str | None = None,
        nprobe: int | None = None,
        version: str = "",
    ) -> _T:
        """A new index over ``vectors`` with ``ids`` (unique, >= 0), trained if the
        factory needs it; ``factory`` defaults to the size-based choice."""
        rows = cls._encode(vectors, None, "vectors")
        ids = _check_ids(ids, rows.shape[0])
        index, factory = cls._make(rows, factory)
        obj = cls(index, factory=factory, version=version)
        ivf = obj._extract_ivf()
        if ivf is not None:
            # id -> (list, offset) hash table: remove/replace touch only the lists
            # holding those ids instead of scanning all N codes.
            ivf.set_direct_map_type(faiss.DirectMap.Hashtable)
            obj.nprobe = nprobe or max(1, ivf.nlist // DEFAULT_NPROBE_DIVISOR)
        if not index.is_trained:
            if rows.shape[0] == 0:
                raise ValueError(f"{factory!r} needs training vectors")
            cap = TRAIN_PER_LIST * ivf.nlist if ivf is not None else 65_536
            sample = rows
            if rows.shape[0] > cap:
                sample = rows[np.sort(np.random.default_rng(0).choice(len(rows), cap, False))]
            index.train(sample)
        if rows.shape[0]:
            index.add_with_ids(rows, ids)
        return obj

    def add(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        """Add vectors; an id already in the index gets its vector replaced."""
        rows = self._encode(vectors, self.dim, "vectors")
        ids = _check_ids(ids, rows.shape[0])
        if ids.size:
            if self.ntotal:
                self._remove(ids)
            self._index.add_with_ids(rows, ids)

    def remove(self, ids: np.ndarray) -> int:
        """Remove these ids (unknown ones are ignored); returns how many went."""
        ids = np.asarray(ids)
        ids = _check_ids(ids, ids.shape[0] if ids.ndim == 1 else -1, unique=False)
        return self._remove(ids) if ids.size and self.ntotal else 0

    def _remove(self, ids: np.ndarray) -> int:
        ivf = self._extract_ivf()
        if ivf is not None and ivf.direct_map.type == faiss.DirectMap.Hashtable:
            sel = faiss.IDSelectorArray(ids.size, faiss.swig_ptr(ids))  # hash lookups
        else:  # an IDSelectorArray here would be scanned once per stored vector
            sel = faiss.IDSelectorBatch(ids.size, faiss.swig_ptr(ids))
        try:
            return int(self._index.remove_ids(sel))
        except RuntimeError as exc:  # e.g. HNSW, IndexRefine: no removal in faiss
            raise NotImplementedError(f"{self.factory!r} cannot remove ids") from exc

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` per query, best first: (scores float32 [n, k], ids int64 [n, k]).
        Where fewer than k vectors are reachable, id is -1 and score -inf."""
        _check_k(k)
        rows = self._encode(queries, self.dim, "queries")
        nq = rows.shape[0]
        if nq == 0 or self.ntotal == 0:
            return np.full((nq, k), -np.inf, np.float32), np.full((nq, k), -1, np.int64)
        distances, ids = self._index.search(rows, int(k))
        scores = self._scores(distances)
        scores[ids < 0] = -np.inf
        return scores, ids

    def serialized_size(self) -> int:
        """Bytes of the faiss payload: the index's size on disk (and about in RAM)."""
        size = 0

        def count(chunk: bytes) -> int:
            nonlocal size
            size += len(chunk)
            return len(chunk)

        type(self)._write(self._index, faiss.PyCallbackIOWriter(count))
        return size

    def save(self, path: str | os.PathLike) -> None:
        """Write atomically: readers see the old file or the new one, never a mix."""
        meta = {
            "format": FORMAT, "kind": self.kind, "version": self.version,
            "dim": self.dim, "factory": self.factory, "count": self.ntotal,
            "nprobe": self.nprobe, "faiss_version": faiss.__version__,
        }  # fmt: skip
        write_index_file(path, lambda writer: type(self)._write(self._index, writer), meta)

    @classmethod
    def load(cls: type[_T], path: str | os.PathLike) -> _T:
        """Load a file written by :meth:`save`; IndexCorrupt if it is damaged."""
        obj = load_index(path)
        if not isinstance(obj, cls):
            raise ValueError(f"{path} holds a {obj.kind!r} index, not {cls.kind!r}")
        return obj

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(factory={self.factory!r}, version={self.version!r}, "
            f"ntotal={self.ntotal}, nprobe={self.nprobe})"
        )


class VectorIndex(_IndexBase):
    """Float32 L2-normalised vectors, inner product (= cosine) scores.

    Make one with :meth:`build` or :meth:`load`; ``VectorIndex(faiss_index, factory=...)``
    wraps an index built by hand (benchmarks), whose ids must then already be pks.
    """

    kind = "float"
    _write = staticmethod(faiss.write_index)
    _read = staticmethod(faiss.read_index)

    @classmethod
    def _encode(cls, x: np.ndarray, dim: int | None, name: str) -> np.ndarray:
        return _check_float(x, dim, name)

    @classmethod
    def _make(cls, rows: np.ndarray, factory: str | None) -> tuple[Any, str]:
        n, dim = rows.shape
        factory = factory or choose_factory(n, dim)
        index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
        if faiss.try_extract_index_ivf(index) is None and not isinstance(
            index, faiss.IndexIDMap
        ):  # without the map, faiss ids would be insertion positions, not image pks
            index = faiss.IndexIDMap2(index)
        return index, factory

    def _scores(self, distances: np.ndarray) -> np.ndarray:
        return distances

    def _extract_ivf(self):
        return faiss.try_extract_index_ivf(self._index)


def binarize(vectors: np.ndarray) -> np.ndarray:
    """Sign bits of float vectors, 8 per byte: [n, d] float32 -> [n, d / 8] uint8."""
    if not isinstance(vectors, np.ndarray) or vectors.dtype != np.float32:
        raise ValueError("binarize takes a float32 numpy array")
    if vectors.ndim != 2 or vectors.shape[1] % 8:
        raise ValueError(f"vectors must be 2-D with d % 8 == 0, got {vectors.shape}")
    return np.packbits(vectors > 0, axis=1)


class BinaryVectorIndex(_IndexBase):
    """Hamming search over sign bits; score = 1 - hamming / bits.

    Takes float32 [n, bits] (binarised by sign) or packed uint8 [n, bits / 8]; ``dim``
    is in bits. 32 bytes per 256-d vector instead of 1024: good for exact and
    near-duplicate images (stolen photos, re-uploads), coarse for similar products.
    """

    kind = "binary"
    _write = staticmethod(faiss.write_index_binary)
    _read = staticmethod(faiss.read_index_binary)

    @classmethod
    def _encode(cls, x: np.ndarray, dim: int | None, name: str) -> np.ndarray:
        if not isinstance(x, np.ndarray) or x.ndim != 2:
            raise ValueError(f"{name} must be a 2-D numpy array")
        if x.dtype == np.float32:
            if (dim is not None and x.shape[1] != dim) or not np.isfinite(x).all():
                raise ValueError(f"{name} must be finite with shape (n, {dim}), got {x.shape}")
            return binarize(x)
        if x.dtype == np.uint8 and (dim is None or x.shape[1] * 8 == dim):
            return np.ascontiguousarray(x)
        raise ValueError(f"{name} must be float32 (n, bits) or packed uint8 (n, bits/8)")

    @classmethod
    def _make(cls, rows: np.ndarray, factory: str | None) -> tuple[Any, str]:
        n, bits = rows.shape[0], rows.shape[1] * 8
        factory = factory or choose_binary_factory(n, bits)
        index = faiss.index_binary_factory(bits, factory)
        if not isinstance(index, (faiss.IndexBinaryIVF, faiss.IndexBinaryIDMap)):
            index = faiss.IndexBinaryIDMap2(index)
        return index, factory

    def _scores(self, distances: np.ndarray) -> np.ndarray:
        return 1.0 - distances.astype(np.float32) / np.float32(self.dim)

    def _extract_ivf(self):
        return self._index if isinstance(self._index, faiss.IndexBinaryIVF) else None


def load_index(path: str | os.PathLike) -> VectorIndex | BinaryVectorIndex:
    """Load either kind (the file's trailer says which); IndexCorrupt if damaged."""
    kinds: dict[str, type[_IndexBase]] = {"float": VectorIndex, "binary": BinaryVectorIndex}

    def read(reader, meta: dict):
        if meta.get("kind") not in kinds:
            raise IndexCorrupt(f"{path}: unknown index kind {meta.get('kind')!r}")
        return kinds[meta["kind"]]._read(reader)

    index, meta = read_index_file(path, read)
    if int(index.d) != meta["dim"] or int(index.ntotal) != meta["count"]:
        raise IndexCorrupt(f"{path}: payload disagrees with its metadata")
    obj = kinds[meta["kind"]](index, factory=meta["factory"], version=meta["version"])
    if meta.get("nprobe") is not None:
        obj.nprobe = meta["nprobe"]
    return obj  # type: ignore[return-value]


# ----------------------------------------------------------------------------- results


def group_by_product(
    scores: np.ndarray,
    ids: np.ndarray,
    image_to_product: Mapping[int, int] | Callable[[int], int | None],
    k: int,
    images_per_product: int = 1,
) -> list[tuple[int, float, int, float]]:
    """One query's image hits -> top ``k`` products as (product_id, score, image_id, best).

    A product scores as the mean of its ``images_per_product`` best images among the hits
    (of those it has there, when fewer), 1 being its best image alone; several photos of
    one product must not push other products out of the top k. ``image_id`` is the
    product's best image and ``best`` that image's score. Ordered by score, then product
    id for stable output. Ids of -1 and images the mapping does not know (deleted since
    the index was built) are skipped.
    """
    _check_k(k)
    if images_per_product < 1:
        raise ValueError(f"images_per_product must be >= 1, got {images_per_product}")
    scores, ids = np.asarray(scores), np.asarray(ids)
    if scores.ndim == 2 and scores.shape[0] == 1:
        scores, ids = scores[0], ids[0]
    if scores.ndim != 1 or scores.shape != ids.shape:
        raise ValueError(f"one query's scores and ids, got {scores.shape} and {ids.shape}")
    lookup = image_to_product.get if isinstance(image_to_product, Mapping) else image_to_product
    hits: dict[int, list[tuple[float, int]]] = {}
    for score, image_id in zip(scores.tolist(), ids.tolist()):
        if image_id < 0:
            continue
        product_id = lookup(image_id)
        if product_id is not None:
            hits.setdefault(product_id, []).append((-score, image_id))
    grouped = []
    for product_id, product_hits in hits.items():
        best = sorted(product_hits)[:images_per_product]  # best score first, then lower image id
        grouped.append((int(product_id), -sum(s for s, _ in best) / len(best), int(best[0][1]), -best[0][0]))
    grouped.sort(key=lambda hit: (-hit[1], hit[0]))
    return [(p, float(s), i, float(b)) for p, s, i, b in grouped[:k]]
