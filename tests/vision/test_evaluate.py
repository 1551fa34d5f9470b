"""vision.evaluate on a tiny synthetic interchange folder whose answers are known exactly.

The embedder maps an image to the one-hot of its palette colour, so a query's product
ranking is decided by colours alone; products with score 0 tie and go by product id,
which is the sorted key order (a-red, b-green, c-yellow, d-blue).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vision.detect import NoDetector
from vision.evaluate import EmbeddingCache, evaluate_folder, render_examples, scan_folder
from vision.pipeline import SearchConfig

torch.set_num_threads(1)

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "datasets" / "grocery-store"
COLOURS = {
    "red": (255, 0, 0), "green": (0, 255, 0), "yellow": (255, 255, 0), "blue": (0, 0, 255), "cyan": (0, 255, 255),
}  # fmt: skip
PALETTE = np.array(list(COLOURS.values()), float)


class ColourEmbedder:
    version = "colour-test"
    dim = len(PALETTE)

    def __init__(self) -> None:
        self.embedded = 0

    def embed(self, images):
        self.embedded += len(images)
        out = np.zeros((len(images), self.dim), np.float32)
        for i, img in enumerate(images):
            mean = np.asarray(img, float).reshape(-1, 3).mean(axis=0)
            out[i, np.argmin(((PALETTE - mean) ** 2).sum(axis=1))] = 1.0
        return out


def _put(root: Path, rel: str, colour: str, size=(64, 48)) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, COLOURS[colour]).save(path)


@pytest.fixture
def folder(tmp_path) -> Path:
    root = tmp_path / "shop"
    for key, colour in [("a-red", "red"), ("b-green", "green"), ("c-yellow", "yellow"), ("d-blue", "blue")]:
        _put(root, f"catalog/{key}/iconic.png", colour)
    _put(root, "reviews/a-red/r1.png", "red")
    _put(root, "reviews/d-blue/r1.png", "cyan")  # the blue product photographed under odd light
    _put(root, "reviews/x-gone/r1.png", "green")  # a product no longer in the catalog: ignored
    _put(root, "queries/a-red/q1.png", "red", size=(300, 200))  # rank 1
    _put(root, "queries/b-green/q1.png", "green")  # rank 1
    _put(root, "queries/b-green/q2.png", "blue")  # d-blue first, then the zero-score tie: rank 3
    _put(root, "queries/d-blue/q1.png", "cyan")  # rank 1 with reviews; catalog only: tie, rank 4
    _put(root, "queries/z-unknown/q1.png", "red")  # not in the catalog: skipped
    (root / "queries/a-red/broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")  # skipped
    (root / "catalog/a-red/.DS_Store").write_bytes(b"junk")  # hidden files are not images
    (root / "products.csv").write_text("key,title,category,description\na-red,Red thing,X,\n")
    return root


def _evaluate(folder: Path, **kwargs):
    kwargs.setdefault("embedder", ColourEmbedder())
    return evaluate_folder(folder, detector=NoDetector(), config=SearchConfig(detector="none"), **kwargs)


def test_scan_folder_reads_the_layout(folder):
    data = scan_folder(folder)
    assert data.products == ["a-red", "b-green", "c-yellow", "d-blue"]
    assert len(data.catalog) == 4 and len(data.reviews) == 3 and len(data.queries) == 6
    assert data.titles == {"a-red": "Red thing"}


def test_scan_folder_requires_a_catalog(tmp_path):
    with pytest.raises(FileNotFoundError):
        scan_folder(tmp_path)


def test_metrics_with_reviews(folder):
    report = _evaluate(folder)
    assert report.n_products == 4 and report.n_gallery_images == 6 and report.n_queries == 4
    assert sorted((Path(q.path).parent.name, Path(q.path).name, q.rank) for q in report.queries) == [
        ("a-red", "q1.png", 1), ("b-green", "q1.png", 1), ("b-green", "q2.png", 3), ("d-blue", "q1.png", 1),
    ]  # fmt: skip
    assert report.recall == {1: 0.75, 5: 1.0, 10: 1.0}
    assert report.mrr == pytest.approx((3 + 1 / 3) / 4)
    assert sorted(Path(p).name for p in report.skipped_files) == ["broken.jpg", "q1.png"]
    assert report.crop_rate == 0.0 and report.detector == "none"


def test_metrics_catalog_only(folder):
    report = _evaluate(folder, catalog_only=True)
    assert report.n_gallery_images == 4
    assert report.recall[1] == 0.5 and report.recall[5] == 1.0
    assert report.mrr == pytest.approx((2 + 1 / 3 + 1 / 4) / 4)


def test_hits_name_products_and_gallery_files(folder):
    report = _evaluate(folder)
    q = next(q for q in report.queries if q.path.endswith("b-green/q2.png"))
    assert [h[0] for h in q.hits] == ["d-blue", "a-red", "b-green", "c-yellow"]
    # d-blue scores as the mean of its images (SearchConfig.product_images): the blue iconic
    # image's 1.0 and the cyan review's 0; the file named is its best image
    assert q.hits[0][1] == pytest.approx(0.5) and q.hits[0][2].endswith("catalog/d-blue/iconic.png")
    assert q.box[5] == "image" and q.box[:4] == pytest.approx((0, 0, 64, 48))


def test_report_serialises_and_summarises(folder):
    progress: list[tuple[str, int, int]] = []
    report = _evaluate(folder, progress=lambda *a: progress.append(a))
    data = json.loads(report.to_json())
    assert data["recall"] == {"@1": 0.75, "@5": 1.0, "@10": 1.0} and "queries" not in data
    assert set(data["latency_ms"]) >= {"decode", "detect", "embed", "search"}
    assert all(v["p95"] >= v["p50"] >= 0 for v in data["latency_ms"].values())
    assert len(json.loads(report.to_json(include_queries=True))["queries"]) == 4
    table = report.summary_table()
    assert "R@1" in table and "0.750" in table and table.count("\n") == 2
    assert ("gallery", 6, 6) in progress and progress[-1] == ("queries", 5, 5)  # the broken one counts


def test_gallery_embeddings_are_cached_by_path_mtime_and_size(folder, tmp_path):
    cache_dir = tmp_path / "cache"
    first = ColourEmbedder()
    _evaluate(folder, embedder=first, cache_dir=cache_dir)
    assert first.embedded == 6 + 4  # gallery + queries
    # when nothing changed, only the queries are embedded again
    second = ColourEmbedder()
    report = _evaluate(folder, embedder=second, cache_dir=cache_dir)
    assert second.embedded == 4 and report.gallery_from_cache == 6
    assert report.recall == {1: 0.75, 5: 1.0, 10: 1.0}
    # when a catalog photo changes, it alone is embedded again, and the new picture counts
    _put(folder, "catalog/c-yellow/iconic.png", "cyan", size=(65, 48))
    third = ColourEmbedder()
    report = _evaluate(folder, embedder=third, cache_dir=cache_dir)
    assert third.embedded == 1 + 4 and report.gallery_from_cache == 5
    assert (cache_dir / "colour-test.npz").is_file()


def test_damaged_cache_is_ignored(tmp_path):
    (tmp_path / "v.npz").write_bytes(b"garbage")
    cache = EmbeddingCache(tmp_path, "v", 3)
    assert cache.get(tmp_path / "v.npz") is None


def test_render_examples_draws_a_grid(folder, tmp_path):
    report = _evaluate(folder)
    out = render_examples(report, tmp_path / "grid.png", n=4, top=5, thumb=32)
    grid = np.asarray(Image.open(out).convert("RGB"))
    cell, pad, label = 32 + 8, 6, 14
    assert grid.shape == (pad + 4 * (cell + label + pad), pad + 6 * (cell + pad), 3)
    colours = {tuple(c) for c in grid.reshape(-1, 3)}
    assert (30, 170, 60) in colours and (210, 40, 40) in colours  # a right and a wrong hit


@pytest.mark.weights
def test_mobilenet_on_a_few_shared_products(tmp_path):
    # given five products with their catalog photo, four review photos and one query
    if not SHARED.is_dir():
        pytest.skip("shared dataset not present")
    keys = sorted(p.name for p in (SHARED / "queries").iterdir())[::12][:5]
    root = tmp_path / "mini"
    for key in keys:
        for part, count in (("catalog", 1), ("reviews", 4), ("queries", 1)):
            (root / part / key).mkdir(parents=True)
            for f in sorted((SHARED / part / key).iterdir())[:count]:
                os.symlink(f, root / part / key / f.name)
    # when evaluated with pretrained MobileNetV2 on whole images
    from vision.embed import TorchvisionEmbedder

    try:
        embedder = TorchvisionEmbedder("mobilenet_v2")
    except Exception as exc:  # WeightsUnavailable: the conftest usually skips first
        pytest.skip(str(exc))
    report = evaluate_folder(root, embedder=embedder, detector="none")
    # then every query finds its product in the top 2 of 5
    assert report.n_queries == 5 and report.n_gallery_images == 25
    assert report.recall[5] == 1.0 and report.mrr >= 0.5, [(q.product, q.rank) for q in report.queries]
    shutil.rmtree(root)
