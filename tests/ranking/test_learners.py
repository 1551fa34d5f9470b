"""Models: the compiled numpy scorers equal sklearn's decision function; metrics."""

import numpy as np
import pytest

from ranking.learners import compile_scorer, make_estimator, ndcg_at


@pytest.mark.parametrize("kind", ["lr", "gbdt_lr"])
def test_compiled_scorer_equals_sklearn(kind):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(600, 5))
    y = (X[:, 0] + X[:, 1] * X[:, 2] + rng.normal(scale=0.5, size=600) > 0.5).astype(int)
    model = make_estimator(kind, {"n_estimators": 20} if kind == "gbdt_lr" else None).fit(X, y)
    scorer = compile_scorer(model)
    assert np.allclose(scorer(X[:50]), model.decision_function(X[:50]))


def test_gbdt_lr_learns_an_interaction_that_lr_cannot():
    rng = np.random.default_rng(1)
    X = rng.uniform(-1, 1, size=(3000, 2))
    y = ((X[:, 0] > 0) ^ (X[:, 1] > 0)).astype(int)
    from sklearn.metrics import roc_auc_score

    auc = {k: roc_auc_score(y[2000:], make_estimator(k).fit(X[:2000], y[:2000]).decision_function(X[2000:]))
           for k in ("lr", "gbdt_lr")}  # fmt: skip
    assert auc["gbdt_lr"] > 0.95 and auc["lr"] < 0.6


def test_ndcg():
    rel = np.array([0.0, 1.0, 0.0])
    assert ndcg_at(10, [(rel, np.array([3.0, 2.0, 1.0]))]) == pytest.approx(1 / np.log2(3))
    assert ndcg_at(10, [(rel, np.array([1.0, 2.0, 0.0]))]) == 1.0
    assert ndcg_at(10, [(np.zeros(3), np.zeros(3))]) is None  # no clicks: not counted
