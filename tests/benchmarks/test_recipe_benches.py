"""Helpers of the benchmarks that compare training recipes without the query photos."""

import numpy as np

from benchmarks.inference_variants import product_recall
from benchmarks.train_bench import distinct_split
from vision.train_data import recall_at


def test_distinct_split_holds_out_each_products_outlying_photos():
    rng = np.random.default_rng(0)
    vectors, labels, outliers = [], [], []
    for product in range(2):
        centre, far = rng.normal(size=8), rng.normal(size=8)
        for i in range(20):
            outlier = i in (3, 11)  # file order says nothing about which photos stand apart
            vectors.append((far if outlier else centre) + 0.05 * rng.normal(size=8))
            labels.append(product)
            outliers.append(outlier)
    held = distinct_split(np.asarray(vectors), labels, share=0.1, groups=2)
    assert held.tolist() == outliers


def test_a_product_can_score_as_the_mean_of_its_best_images():
    # product 0: one image right at the query, one far off; product 1: two images close to it
    gallery = np.array([[1.0, 0.0], [0.0, 1.0], [0.95, 0.312], [0.95, -0.312]], np.float32)
    labels = [0, 0, 1, 1]
    query = np.array([[1.0, 0.0]], np.float32)
    assert product_recall(query, [0], gallery, labels, best=1) == (1.0, 1.0)
    assert product_recall(query, [0], gallery, labels, best=2) == (0.0, 1.0)
    # with one image per product it is plain product-level recall
    one_each = gallery[[0, 2]]
    assert (
        product_recall(query, [1], one_each, [0, 1], best=3)[0] == recall_at(query, [1], one_each, [0, 1])["recall@1"]
    )
