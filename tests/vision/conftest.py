"""Seeded vectors whose neighbours are known by construction, shared by the index tests."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from vision.index import VectorIndex

D = 32


@pytest.fixture(scope="module")
def faiss_one_thread():
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


def unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def clustered(n: int, seed: int, clusters: int = 40) -> np.ndarray:
    """Points around a few centres, so that IVF lists mean something."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, D))
    return unit(centres[rng.integers(clusters, size=n)] + 0.3 * rng.standard_normal((n, D)))


def exact_topk(db: np.ndarray, ids: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    return ids[np.argsort(-(queries @ db.T), axis=1, kind="stable")[:, :k]]


@pytest.fixture(scope="module")
def data():
    db = clustered(3000, seed=1)
    ids = np.arange(3000, dtype=np.int64) * 7 + 100  # primary keys, not positions
    # Each query is a database vector nudged by ~2 degrees: its nearest neighbour is that
    # vector (random 32-d clusters never put two vectors that close).
    rng = np.random.default_rng(2)
    targets = rng.choice(3000, 50, replace=False)
    queries = unit(db[targets] + 0.03 * rng.standard_normal((50, D)) / np.sqrt(D))
    return db, ids, queries, ids[targets]


@pytest.fixture(scope="module")
def ivf(data):
    db, ids, _, _ = data
    return VectorIndex.build(db, ids, factory="IVF16,Flat", version="emb-v1")
