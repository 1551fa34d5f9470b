"""A trained checkpoint under other inference settings, on the distinct split of the review
photos (never queries/): input resolution, crops averaged per photo, scoring a product by
the mean of its best few images instead of its best one, and searching with the box the
search path chooses (NanoDet and the box rule) instead of the whole photo. Last, how many
of the checkpoint's misses go to one of the product's three look-alikes (nearest class
centroids of the training reviews, vision.train_data.neighbour_classes).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/train_bench.py --split distinct --views 0 --save CKPT
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/inference_variants.py CKPT

The checkpoint must come from ``train_bench.py --split distinct`` (the default folder), so
that the photos held out here are the ones it was not trained on. Prints R@1 / R@5 with
the training reviews in the gallery and against the catalog images only.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._platform import SHARED  # noqa: E402

# (crop side, short side it is cut from): torchvision's 224/256 is the platform's default.
SIZES = {"224/256": (224, 256), "224/224": (224, 224), "192/219": (192, 219), "256/292": (256, 292)}
SIZES |= {"256/256": (256, 256), "288/329": (288, 329)}
AVERAGED = (("224/256", "224/224"), ("224/256", "256/292"), ("224/256", "224/224", "256/292"))


def product_recall(
    queries: np.ndarray, labels: Sequence[int], gallery: np.ndarray, gallery_labels: Sequence[int], best: int
) -> tuple[float, float]:
    """(R@1, R@5) when a product scores as the mean of its ``best`` most similar images."""
    gallery_labels = np.asarray(gallery_labels)
    products = np.unique(gallery_labels)
    sims = queries @ gallery.T
    scores = np.stack([-np.sort(-sims[:, gallery_labels == p], axis=1)[:, :best].mean(1) for p in products], axis=1)
    ranked = products[np.argsort(-scores, axis=1)]
    hits = [(label in row[:1], label in row[:5]) for row, label in zip(ranked, labels)]
    return tuple(round(float(v), 3) for v in np.mean(hits, axis=0))  # type: ignore[return-value]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("--folder", type=Path, default=SHARED)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    import torch

    from benchmarks.train_bench import distinct_split
    from vision.embed import Preprocess, TorchvisionEmbedder, make_embedder
    from vision.evaluate import scan_folder
    from vision.imageio import decode_image
    from vision.pipeline import SearchConfig, SearchPipeline, crop
    from vision.train_data import DECODE_MAX_SIDE, neighbour_classes

    torch.set_num_threads(args.threads)
    folder = scan_folder(args.folder)
    product = {key: i for i, key in enumerate(folder.products)}
    catalog = [decode_image(p, max_side=DECODE_MAX_SIDE)[0] for p, _ in folder.catalog]
    reviews = [decode_image(p, max_side=DECODE_MAX_SIDE)[0] for p, _ in folder.reviews]
    catalog_labels = [product[k] for _, k in folder.catalog]
    review_labels = np.array([product[k] for _, k in folder.reviews])
    held = distinct_split(make_embedder("mobilenet_v2").embed(reviews), review_labels)
    train, test = np.flatnonzero(~held), np.flatnonzero(held)
    print(f"{len(catalog)} catalog, {len(train)} training reviews, {len(test)} held out", flush=True)

    trained = TorchvisionEmbedder.from_checkpoint(args.checkpoint)
    search = SearchPipeline.from_config(SearchConfig(), embedder=trained, index=None, image_to_product={})
    regions = []  # each held-out photo as a search sees it: its chosen box, padded
    for i in test:
        image, _ = search.load(folder.reviews[i][0].read_bytes())
        boxes, chosen = search.candidates(image)
        regions.append(crop(image, boxes[chosen], search.config.pad_for(False)))
    vectors: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name, (size, resize) in SIZES.items():
        embedder = TorchvisionEmbedder(
            trained.arch,
            projection=trained.projection,
            preprocess=Preprocess(size=size, resize=resize),
            backbone_state=trained.net.backbone.state_dict(),
        )
        vectors[name] = embedder.embed(catalog), embedder.embed(reviews)

    def mean_of(names: Sequence[str], side: int) -> np.ndarray:
        total = sum(vectors[n][side] for n in names)
        return total / np.linalg.norm(total, axis=1, keepdims=True)

    def line(name: str, cat: np.ndarray, rev: np.ndarray, queries: np.ndarray, best: int = 1) -> None:
        q, ql = queries[test], review_labels[test]
        with_reviews = product_recall(
            q, ql, np.concatenate([cat, rev[train]]), catalog_labels + review_labels[train].tolist(), best
        )
        catalog_only = product_recall(q, ql, cat, catalog_labels, best)
        print(f"{name:50s} " + "   ".join(f"{r1:.3f} / {r5:.3f}" for r1, r5 in (with_reviews, catalog_only)))

    print(f"{'inference (crop/short side)':50s} with reviews    catalog only")
    for name, (cat, rev) in vectors.items():
        line(name, cat, rev, rev)
    for names in AVERAGED:
        cat, rev = mean_of(names, 0), mean_of(names, 1)
        line("mean of " + " + ".join(names), cat, rev, rev)
        line("mean of " + " + ".join(names) + ", gallery only", cat, rev, vectors["224/256"][1])
    cat, rev = vectors["224/256"]
    for best in (2, 3, 5):
        line(f"224/256, a product's {best} best images", cat, rev, rev, best)
    boxed = rev.copy()
    boxed[test] = trained.embed(regions)
    line("224/256, the chosen box", cat, rev, boxed)

    look_alikes = neighbour_classes(rev[train], review_labels[train], 3)
    galleries = {
        "with reviews": (np.concatenate([cat, rev[train]]), np.array(catalog_labels + review_labels[train].tolist())),
        "catalog only": (cat, np.array(catalog_labels)),
    }
    for name, (gallery, gallery_labels) in galleries.items():
        top = gallery_labels[np.argmax(rev[test] @ gallery.T, axis=1)]
        missed = [(t, w) for t, w in zip(review_labels[test], top) if t != w]
        to_look_alikes = sum(w in look_alikes[t] for t, w in missed)
        print(f"224/256, {name}: {len(missed)} misses, {to_look_alikes} to one of the product's 3 look-alikes")


if __name__ == "__main__":
    main()
