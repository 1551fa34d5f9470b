"""Small similarity helpers shared by review cleaning and its benchmark."""

from __future__ import annotations

import numpy as np


def best_view_score(
    queries: np.ndarray, views: np.ndarray, *, query_ids: np.ndarray, view_ids: np.ndarray
) -> np.ndarray:
    """For each query vector, the best cosine similarity over ``views``, leaving out the
    view that is the query itself (same id). Rows are L2-normalised. Returns float32 [n];
    -1 where no other view exists."""
    assert queries.ndim == 2 and views.ndim == 2 and queries.shape[1] == views.shape[1], (queries.shape, views.shape)
    assert len(query_ids) == len(queries) and len(view_ids) == len(views)
    if len(views) == 0:
        return np.full(len(queries), -1.0, np.float32)
    sims = queries @ views.T
    sims[np.asarray(query_ids)[:, None] == np.asarray(view_ids)[None, :]] = -1.0
    return sims.max(axis=1).astype(np.float32)
