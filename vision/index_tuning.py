"""Measuring and tuning an index's recall against exact ground truth."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vision.index import BinaryVectorIndex, VectorIndex, _check_k

__all__ = ["NprobeTuning", "recall_at_k", "tune_nprobe"]


def recall_at_k(found: np.ndarray, truth: np.ndarray, k: int) -> float:
    """Mean fraction of each query's true top ``k`` present in its found top ``k``
    (k-recall@k, stricter than "is the nearest one in the top k"). -1s are ignored."""
    found, truth = np.asarray(found)[:, :k], np.asarray(truth)[:, :k]
    if found.shape[0] != truth.shape[0]:
        raise ValueError(f"{found.shape[0]} results for {truth.shape[0]} queries")
    valid = truth >= 0
    hits = ((truth[:, :, None] == found[:, None, :]).any(axis=2) & valid).sum(axis=1)
    denom = valid.sum(axis=1)
    keep = denom > 0
    return float((hits[keep] / denom[keep]).mean()) if keep.any() else 1.0


@dataclass(frozen=True)
class NprobeTuning:
    nprobe: int
    recall: float
    reached: bool  # False: even nprobe = nlist misses the target (e.g. PQ's ceiling)
    tried: tuple[tuple[int, float], ...]  # (nprobe, recall), ascending nprobe


def tune_nprobe(
    index: VectorIndex | BinaryVectorIndex,
    queries: np.ndarray,
    ground_truth: np.ndarray,
    target_recall: float = 0.95,
    k: int = 10,
) -> NprobeTuning:
    """Smallest nprobe whose recall@k (see :func:`recall_at_k`) reaches the target.

    Doubles nprobe until the target is met, then bisects; that assumes recall grows
    with nprobe, which holds for IVF-Flat (more lists visited = superset of
    candidates) and nearly so for PQ. Leaves ``index.nprobe`` set to the answer. Tune
    on queries held out from the ones you report, or the recall is optimistic.
    """
    _check_k(k)
    if not index.is_ivf:
        raise ValueError(f"nprobe only applies to IVF indexes, not {index.factory!r}")
    truth = np.asarray(ground_truth)
    if truth.ndim != 2 or truth.shape[0] != queries.shape[0] or truth.shape[1] < k:
        raise ValueError(f"ground_truth must be ({queries.shape[0]}, >= {k}), got {truth.shape}")
    nlist = int(index.nlist)
    measured: dict[int, float] = {}

    def recall(nprobe: int) -> float:
        if nprobe not in measured:
            index.nprobe = nprobe
            measured[nprobe] = recall_at_k(index.search(queries, k)[1], truth, k)
        return measured[nprobe]

    failing, passing = 0, 1
    while recall(passing) < target_recall and passing < nlist:
        if failing >= 2 and recall(passing) - recall(failing // 2) < 1e-4:
            break  # flat over two doublings: a compression ceiling, not an nprobe problem
        failing, passing = passing, min(2 * passing, nlist)
    reached = recall(passing) >= target_recall
    if reached:
        while passing - failing > 1:
            mid = (failing + passing) // 2
            if recall(mid) >= target_recall:
                passing = mid
            else:
                failing = mid
    else:  # unreachable (PQ's ceiling): the smallest nprobe on the plateau of the best
        top = max(measured.values())
        passing = min(p for p, r in measured.items() if r >= top - 0.002)
    index.nprobe = passing
    return NprobeTuning(passing, measured[passing], reached, tuple(sorted(measured.items())))
