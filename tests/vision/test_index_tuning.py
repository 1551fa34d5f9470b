"""vision.index_tuning on the seeded vectors of tests/vision/conftest.py."""

from __future__ import annotations

import numpy as np
import pytest

from tests.vision.conftest import D, clustered, exact_topk, unit
from vision.index import VectorIndex
from vision.index_tuning import recall_at_k, tune_nprobe

pytestmark = pytest.mark.usefixtures("faiss_one_thread")


def test_recall_at_k_counts_the_true_top_k():
    truth = np.array([[1, 2, 3], [4, 5, -1]])
    found = np.array([[3, 9, 1], [5, 4, 8]])
    assert recall_at_k(found, truth, 3) == pytest.approx((2 / 3 + 1.0) / 2)


def test_tune_nprobe_finds_the_smallest_sufficient_nprobe(data, ivf):
    db, ids, _, _ = data
    queries = unit(clustered(200, seed=3) + 0.2 * np.random.default_rng(4).standard_normal((200, D)))
    truth = exact_topk(db, ids, queries, 10)
    tuning = tune_nprobe(ivf, queries, truth, target_recall=0.9, k=10)
    assert tuning.reached and ivf.nprobe == tuning.nprobe and tuning.recall >= 0.9
    curve = dict(tuning.tried)
    if tuning.nprobe > 1:
        ivf.nprobe = tuning.nprobe - 1
        assert recall_at_k(ivf.search(queries, 10)[1], truth, 10) < 0.9
    assert curve[tuning.nprobe] == pytest.approx(tuning.recall)
    with pytest.raises(ValueError):
        tune_nprobe(VectorIndex.build(db, ids), queries, truth)


def test_tune_nprobe_reports_an_unreachable_target(data, ivf):
    db, ids, queries, _ = data
    truth = exact_topk(db, ids, queries, 10)
    tuning = tune_nprobe(ivf, queries, truth, target_recall=1.01, k=10)
    assert not tuning.reached
    assert tuning.recall == pytest.approx(1.0) and ivf.nprobe == tuning.nprobe <= ivf.nlist
