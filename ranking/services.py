"""Ranker use cases: train a version from the logs, make one live, go back to visual order.

Auto-activation rule (``activate="auto"``, what the weekly task does): a new version goes
live only if, on its own time-based test split (the latest searches, never trained on),
its NDCG@10 beats the visual order's and beats the live version's re-scored on the same
split, and the split has at least MIN_TEST_QUERIES searches with a click. Otherwise it is
stored with its metrics and staff can make it live in the admin (or with
``train_ranker --activate``).
"""

from __future__ import annotations

import io
import logging
import time
import uuid

import joblib
import numpy as np
from django.db import transaction
from django.utils import timezone

from ranking.features import FEATURES, TrainingSet, logged_queries, training_set
from ranking.learners import DEFAULT_PARAMS, KINDS, auc, compile_scorer, make_estimator, ndcg_at
from ranking.models import RankerVersion

logger = logging.getLogger(__name__)

MIN_TRAIN_CLICKS = 10
MIN_TEST_QUERIES = 20
NDCG_K = 10


class RankerTrainingError(Exception):
    """Not enough logs to train or to evaluate."""


def ranker_dump(*, estimator, features: list[str]) -> bytes:
    out = io.BytesIO()
    joblib.dump({"estimator": estimator, "features": list(features)}, out)
    return out.getvalue()


def ranker_load(data: bytes) -> dict:
    return joblib.load(io.BytesIO(bytes(data)))


def _evaluate(ts: TrainingSet, rows: np.ndarray, score: np.ndarray) -> dict:
    y = ts.y[rows]
    groups, q = [], ts.query_index[rows]
    for qi in np.unique(q):
        sel = q == qi
        groups.append((y[sel].astype(np.float64), score[sel]))
    return {"auc": auc(y, score), f"ndcg@{NDCG_K}": ndcg_at(NDCG_K, groups)}


def _sizes(ts: TrainingSet, rows: np.ndarray) -> dict:
    q = np.unique(ts.query_index[rows])
    clicked_queries = len(np.unique(ts.query_index[rows][ts.y[rows] > 0]))
    return {
        "queries": int(len(q)),
        "queries_with_click": int(clicked_queries),
        "impressions": int(len(rows)),
        "clicks": int(ts.y[rows].sum()),
    }


@transaction.atomic
def ranker_make_live(*, ranker: RankerVersion) -> RankerVersion:
    RankerVersion.objects.select_for_update().filter(is_live=True).exclude(pk=ranker.pk).update(is_live=False)
    RankerVersion.objects.filter(pk=ranker.pk).update(is_live=True)
    ranker.is_live = True
    logger.info("ranker %s is live", ranker.version)
    return ranker


def ranker_back_to_visual_order() -> int:
    """No ranker live: search keeps the visual order. Returns how many were switched off."""
    return RankerVersion.objects.filter(is_live=True).update(is_live=False)


def ranker_train(
    *,
    kind: str,
    since=None,
    until=None,
    test_fraction: float = 0.2,
    params: dict | None = None,
    activate: str = "auto",
) -> RankerVersion:
    """Train a ranker of `kind` on the logged searches, oldest (1 - test_fraction) to train
    and the latest test_fraction to test, and store it with its metrics.

    activate: "auto" (the rule in this module's docstring), "always" or "never".
    Raises RankerTrainingError when the logs are too thin.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown ranker kind {kind!r}")
    if activate not in ("auto", "always", "never"):
        raise ValueError(f"activate must be auto, always or never, not {activate!r}")
    t0 = time.perf_counter()
    queries = logged_queries(since=since, until=until)
    if len(queries) < 2:
        raise RankerTrainingError(f"{len(queries)} logged searches: nothing to train on")
    ts = training_set(queries)
    features_s = time.perf_counter() - t0
    n_train = max(1, min(len(queries) - 1, int(round(len(queries) * (1 - test_fraction)))))
    train = np.flatnonzero(ts.query_index < n_train)
    test = np.flatnonzero(ts.query_index >= n_train)
    if ts.y[train].sum() < MIN_TRAIN_CLICKS or ts.y[train].sum() == len(train):
        raise RankerTrainingError(
            f"{int(ts.y[train].sum())} clicks in {len(train)} training impressions: need at least {MIN_TRAIN_CLICKS}"
        )
    params = {**DEFAULT_PARAMS[kind], **(params or {})}
    t1 = time.perf_counter()
    estimator = make_estimator(kind, params).fit(ts.X[train], ts.y[train])
    fit_s = time.perf_counter() - t1
    scorer = compile_scorer(estimator)
    visual_score = ts.X[test, FEATURES.index("visual_score")]
    metrics = {
        "model": _evaluate(ts, test, scorer(ts.X[test])),
        "visual_order": _evaluate(ts, test, visual_score),
        "train": _sizes(ts, train),
        "test": _sizes(ts, test),
        "split_at": queries[n_train].created_at.isoformat(),
        "features_seconds": round(features_s, 2),
        "fit_seconds": round(fit_s, 2),
    }
    live = RankerVersion.objects.filter(is_live=True).first()
    if live is not None:
        try:
            loaded = ranker_load(live.model)
            if loaded["features"] == FEATURES:
                metrics["live"] = {
                    "version": live.version,
                    **_evaluate(ts, test, compile_scorer(loaded["estimator"])(ts.X[test])),
                }
        except Exception:  # an unreadable live model must not stop training
            logger.exception("could not re-score live ranker %s", live.version)
    go_live, reason = _auto_rule(metrics)
    metrics["auto_live"] = {"eligible": go_live, "reason": reason}
    data = ranker_dump(estimator=estimator, features=FEATURES)
    ranker = RankerVersion.objects.create(
        version=f"{kind}-{timezone.now():%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}",
        kind=kind,
        model=data,
        features=FEATURES,
        params={**params, "test_fraction": test_fraction},
        metrics=metrics,
    )
    logger.info("trained ranker %s: %s", ranker.version, metrics)
    if activate == "always" or (activate == "auto" and go_live):
        ranker_make_live(ranker=ranker)
    return ranker


def _auto_rule(metrics: dict) -> tuple[bool, str]:
    key = f"ndcg@{NDCG_K}"
    mine, visual = metrics["model"][key], metrics["visual_order"][key]
    if metrics["test"]["queries_with_click"] < MIN_TEST_QUERIES or mine is None:
        return False, f"fewer than {MIN_TEST_QUERIES} test searches with a click"
    if visual is not None and mine <= visual:
        return False, f"{key} {mine:.4f} does not beat visual order {visual:.4f}"
    live = metrics.get("live", {}).get(key)
    if live is not None and mine <= live:
        return False, f"{key} {mine:.4f} does not beat live {metrics['live']['version']} {live:.4f}"
    return True, f"{key} {mine:.4f} beats visual order {visual:.4f}" + (f" and live {live:.4f}" if live else "")
