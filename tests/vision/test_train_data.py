"""What the embedder's training sees (vision.train_data): held-out split, recall, batches."""

import hashlib
from collections import Counter

import numpy as np

from vision.train import TrainConfig
from vision.train_data import BatchSampler, HardNegatives, is_held_out, neighbour_classes, recall_at


def test_held_out_split_is_a_stable_tenth():
    shas = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(5000)]
    held = [s for s in shas if is_held_out(s)]
    assert 0.08 < len(held) / len(shas) < 0.12
    assert held == [s for s in shas if is_held_out(s)]


def test_recall_counts_distinct_products_not_images():
    gallery = np.array([[1, 0], [0.99, 0.141], [0, 1]], np.float32)
    labels = [7, 7, 8]  # two images of product 7 first, then product 8
    query = np.array([[0.9, 0.436]], np.float32)
    assert recall_at(query, [8], gallery, labels, ks=(1, 2)) == {"recall@1": 0.0, "recall@2": 1.0, "queries": 1}
    assert recall_at(query, [7], gallery, labels, ks=(1, 2))["recall@1"] == 1.0


def test_batches_hold_p_products_of_m_photos_with_catalog_images():
    labels = [c for c in range(10) for _ in range(6)]
    kinds = ["catalog" if i % 6 == 0 else "review" for i in range(60)]
    cfg = TrainConfig(classes_per_batch=4, per_class=3, views=2, catalog_share=1.0, hard_negative_share=0.0)
    sampler = BatchSampler(labels, kinds, [], cfg)
    for _ in range(20):
        rows, batch_labels = sampler.batch()
        assert len(rows) == 12 and sorted(Counter(batch_labels).values()) == [3, 3, 3, 3]
        photos = [r // cfg.views for r in rows]
        assert all(labels[p] == y for p, y in zip(photos, batch_labels))
        # every product brings one of its catalog images (catalog_share=1)
        assert {labels[p] for p in photos if kinds[p] == "catalog"} == set(batch_labels)


def test_logged_hard_negatives_share_a_batch_with_the_clicked_product():
    labels = [c for c in range(30) for _ in range(4)]
    cfg = TrainConfig(classes_per_batch=4, per_class=2, views=1, hard_negative_share=1.0)
    sampler = BatchSampler(labels, ["review"] * len(labels), [HardNegatives(5, (17, 23))], cfg)
    for _ in range(5):
        _, batch_labels = sampler.batch()
        assert {5, 17, 23} <= set(batch_labels)


def test_look_alike_products_are_each_others_nearest_classes():
    rng = np.random.default_rng(0)
    centres = np.array([[1, 0, 0], [0.95, 0.31, 0], [0, 0, 1], [0, 0.31, 0.95]], np.float32)
    labels = [c for c in range(4) for _ in range(5)]
    vectors = centres[labels] + rng.normal(0, 0.02, (20, 3)).astype(np.float32)
    assert neighbour_classes(vectors, labels, k=1) == {0: [1], 1: [0], 2: [3], 3: [2]}
    assert neighbour_classes(vectors, labels, k=2)[1] == [0, 3]


def test_neighbour_batches_bring_each_product_with_its_look_alikes():
    labels = [c for c in range(40) for _ in range(4)]
    cfg = TrainConfig(classes_per_batch=8, per_class=2, views=1, neighbour_share=1.0, neighbours=3)
    # products 4g..4g+3 look alike
    look_alikes = {c: [4 * (c // 4) + i for i in range(4) if 4 * (c // 4) + i != c] for c in range(40)}
    sampler = BatchSampler(labels, ["review"] * len(labels), [], cfg)
    sampler.neighbours = look_alikes
    for _ in range(20):
        _, batch_labels = sampler.batch()
        assert sorted(Counter(c // 4 for c in batch_labels).values()) == [8, 8]  # two whole groups of 4

    cfg = TrainConfig(classes_per_batch=8, per_class=2, views=1, neighbour_share=0.0)
    sampler = BatchSampler(labels, ["review"] * len(labels), [], cfg)
    sampler.neighbours = look_alikes
    groups = [len(Counter(c // 4 for c in sampler.batch()[1])) for _ in range(20)]
    assert max(groups) > 2  # at random, products from more than two groups
