"""The CTR models and their offline metrics. Plain scikit-learn and numpy: no Django here.

- "lr": standardised features -> LogisticRegression.
- "gbdt_lr": GradientBoostingClassifier on the raw features; each sample's leaf in every
  tree (``apply()``) one-hot encoded; LogisticRegression on those indicators (He et al.,
  "Practical lessons from predicting clicks on ads at Facebook", 2014). The trees are fit
  on one half of the training rows and the LR on the other, so the LR does not learn from
  leaves that already memorised its own rows.

Serving does not go through sklearn's predict_proba (its input checks alone cost ~0.3 ms
per call): ``compile_scorer`` turns a fitted model into plain numpy arrays (LR: one dot
product; GBDT+LR: one weight per leaf, summed over trees).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

KINDS = ("lr", "gbdt_lr")
DEFAULT_PARAMS = {
    "lr": {"C": 1.0},
    "gbdt_lr": {"n_estimators": 60, "max_depth": 3, "learning_rate": 0.1, "subsample": 0.8, "C": 0.3},
}


class GBDTLR(ClassifierMixin, BaseEstimator):
    def __init__(self, n_estimators=60, max_depth=3, learning_rate=0.1, subsample=0.8, C=0.3, random_state=0):
        self.n_estimators = n_estimators
        self.max_depth = max_depth
        self.learning_rate = learning_rate
        self.subsample = subsample
        self.C = C
        self.random_state = random_state

    def fit(self, X, y):
        X, y = np.asarray(X, dtype=np.float64), np.asarray(y)
        rng = np.random.default_rng(self.random_state)
        half = rng.random(len(y)) < 0.5
        if len(np.unique(y[half])) < 2 or len(np.unique(y[~half])) < 2:
            half = np.ones(len(y), dtype=bool)  # too few rows to split: share them
        self.gbdt_ = GradientBoostingClassifier(
            n_estimators=self.n_estimators,
            max_depth=self.max_depth,
            learning_rate=self.learning_rate,
            subsample=self.subsample,
            random_state=self.random_state,
        ).fit(X[half], y[half])
        rest = ~half if (~half).any() else half
        self.encoder_ = OneHotEncoder(handle_unknown="ignore").fit(self._leaves(X))
        self.lr_ = LogisticRegression(C=self.C, max_iter=1000).fit(
            self.encoder_.transform(self._leaves(X[rest])), y[rest]
        )
        self.classes_ = self.lr_.classes_
        return self

    def _leaves(self, X):
        return self.gbdt_.apply(X).reshape(len(X), -1)

    def decision_function(self, X):
        return self.lr_.decision_function(self.encoder_.transform(self._leaves(np.asarray(X, dtype=np.float64))))

    def predict_proba(self, X):
        return self.lr_.predict_proba(self.encoder_.transform(self._leaves(np.asarray(X, dtype=np.float64))))


def make_estimator(kind: str, params: dict | None = None):
    params = {**DEFAULT_PARAMS[kind], **(params or {})}
    if kind == "lr":
        return Pipeline([("scale", StandardScaler()), ("lr", LogisticRegression(C=params["C"], max_iter=1000))])
    if kind == "gbdt_lr":
        return GBDTLR(**params)
    raise ValueError(f"unknown ranker kind {kind!r}; expected one of {KINDS}")


@dataclass(frozen=True)
class LinearScorer:
    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float

    def __call__(self, X: np.ndarray) -> np.ndarray:
        return ((X - self.mean) / self.scale) @ self.coef + self.intercept


@dataclass(frozen=True)
class TreeLeafScorer:
    """Per tree: node arrays for the walk, and the LR weight of each leaf."""

    feature: list[np.ndarray]
    threshold: list[np.ndarray]
    left: list[np.ndarray]
    right: list[np.ndarray]
    leaf_weight: list[np.ndarray]
    intercept: float
    depth: int

    def __call__(self, X: np.ndarray) -> np.ndarray:
        out = np.full(len(X), self.intercept)
        rows = np.arange(len(X))
        for feature, threshold, left, right, weight in zip(
            self.feature, self.threshold, self.left, self.right, self.leaf_weight
        ):
            node = np.zeros(len(X), dtype=np.intp)
            for _ in range(self.depth):
                f = feature[node]
                go_left = X[rows, np.maximum(f, 0)] <= threshold[node]
                nxt = np.where(go_left, left[node], right[node])
                node = np.where(f >= 0, nxt, node)  # leaves (feature -2) stay put
            out += weight[node]
        return out


def compile_scorer(estimator):
    """A fitted model -> a numpy function X -> logit, equal to its decision_function."""
    if isinstance(estimator, Pipeline):
        scaler, lr = estimator.named_steps["scale"], estimator.named_steps["lr"]
        return LinearScorer(scaler.mean_, scaler.scale_, lr.coef_[0], float(lr.intercept_[0]))
    if isinstance(estimator, GBDTLR):
        coef = estimator.lr_.coef_[0]
        trees = [t[0].tree_ for t in estimator.gbdt_.estimators_]
        feature, threshold, left, right, weights = [], [], [], [], []
        offset = 0
        for tree, categories in zip(trees, estimator.encoder_.categories_):
            w = np.zeros(tree.node_count)
            w[categories.astype(np.intp)] = coef[offset : offset + len(categories)]
            offset += len(categories)
            feature.append(tree.feature.astype(np.intp))
            threshold.append(tree.threshold)
            left.append(tree.children_left.astype(np.intp))
            right.append(tree.children_right.astype(np.intp))
            weights.append(w)
        depth = max(t.max_depth for t in trees)
        return TreeLeafScorer(feature, threshold, left, right, weights, float(estimator.lr_.intercept_[0]), depth)
    raise TypeError(f"cannot compile {type(estimator).__name__}")


def auc(y: np.ndarray, score: np.ndarray) -> float | None:
    from sklearn.metrics import roc_auc_score

    if len(np.unique(y)) < 2:
        return None
    return float(roc_auc_score(y, score))


def ndcg_at(k: int, groups: list[tuple[np.ndarray, np.ndarray]]) -> float | None:
    """Mean NDCG@k over (relevance, score) groups that have any relevance. Ties in the
    score keep the logged order (stable sort), so a constant score means "as shown"."""
    values = []
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    for rel, score in groups:
        if not np.any(rel > 0):
            continue
        order = np.argsort(-score, kind="stable")[:k]
        dcg = float(np.sum((2.0 ** rel[order] - 1) * discounts[: len(order)]))
        ideal = np.sort(rel)[::-1][:k]
        idcg = float(np.sum((2.0**ideal - 1) * discounts[: len(ideal)]))
        values.append(dcg / idcg)
    return float(np.mean(values)) if values else None
