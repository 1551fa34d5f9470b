"""Fine-tune the embedder on a catalog folder and measure it on held-out review photos.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/train_bench.py [--steps N] [--threads 1]
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/train_bench.py --split distinct --views 0 [--set FIELD=VALUE ...]

Trains on catalog/ plus the review photos outside a held-out split, then reports recall
on the held-out photos for the pretrained and the fine-tuned embedder, with and without
the training reviews in the gallery, and the training speed. It never reads queries/:
the figures on the query photos come from `manage.py evaluate_search --embedder latest`,
on the platform. ``--save PATH`` keeps the checkpoint.

Splits: ``hash``, the platform's own held-out tenth (vision.train_data.is_held_out, by the
file's SHA-256); its photos have near-twins among the training photos, so recall there
saturates. ``distinct`` holds out each product's least typical photos instead: the
pretrained embedder scores 0.61 / 0.30 on them (with reviews / catalog only), about what
it scores on the query photos (0.62 / 0.37), so training recipes are compared there.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._platform import SHARED  # noqa: E402


def distinct_split(vectors: np.ndarray, labels: Sequence[int], share: float = 0.1, groups: int = 6) -> np.ndarray:
    """Mask of each product's least typical photos: its photos clustered by pretrained
    features (average linkage, cosine, ``groups`` clusters), the smallest clusters taken
    until at least ``share`` of the product's photos are.

    A random tenth of the review photos always has near-twins left in training (recall
    ~0.96 with reviews in the gallery, pretrained); these photos do not (~0.62, as on
    photos taken by new shoppers).
    """
    from sklearn.cluster import AgglomerativeClustering

    labels = np.asarray(labels)
    held = np.zeros(len(labels), bool)
    for label in np.unique(labels):
        rows = np.flatnonzero(labels == label)
        if len(rows) < 3:
            continue
        clusters = AgglomerativeClustering(n_clusters=min(groups, len(rows)), linkage="average", metric="cosine")
        assignment = clusters.fit_predict(vectors[rows])
        want = max(1, round(share * len(rows)))
        for c in np.argsort(np.bincount(assignment), kind="stable"):
            if held[rows].sum() >= want:
                break
            held[rows[assignment == c]] = True
    return held


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--folder", type=Path, default=SHARED)
    ap.add_argument("--steps", type=int, help="default: TrainConfig's (0: the warmed-up head alone)")
    ap.add_argument("--head-warmup-steps", type=int, help="default: TrainConfig's")
    ap.add_argument("--head-warmup-lr", type=float, help="default: TrainConfig's")
    ap.add_argument("--views", type=int, help="default: TrainConfig's (0: a fresh crop at every step)")
    ap.add_argument("--train-from", type=int, help="default: TrainConfig's")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--mining", help="batch_hard or semi_hard; default: TrainConfig's")
    ap.add_argument("--margin", type=float, help="default: TrainConfig's")
    ap.add_argument("--batchnorm", help="frozen or train; default: TrainConfig's")
    ap.add_argument(
        "--split",
        choices=("hash", "block", "distinct"),
        default="hash",
        help="hash: the platform's held-out tenth; block: the last 15%% of each product's photos in file "
        "order; distinct: each product's least typical photos (see distinct_split), a split on which the "
        "pretrained embedder scores as it does on new shoppers' photos",
    )
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="any other TrainConfig field (repeatable), e.g. --set crop_scale=0.2",
    )
    ap.add_argument("--backbone-lr", type=float, help="default: TrainConfig's")
    ap.add_argument("--lr", type=float, help="the head's; default: TrainConfig's")
    ap.add_argument("--no-eval", action="store_true", help="training speed only: skip the recall measurements")
    ap.add_argument("--no-pretrained", action="store_true", help="skip measuring the pretrained embedder")
    ap.add_argument("--limit", type=int, help="train on this many review photos (evenly spread): speed runs")
    ap.add_argument("--save", type=Path)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    import torch

    from benchmarks.inference_variants import product_recall
    from vision.embed import make_embedder
    from vision.evaluate import scan_folder
    from vision.pipeline import SearchConfig
    from vision.train import TrainConfig, parse_overrides, train
    from vision.train_data import Photo, embed_photos, is_held_out, recall_at

    best = SearchConfig().product_images  # a product scores as the mean of its best few images

    try:
        overrides = parse_overrides(args.set)
    except ValueError as exc:
        raise SystemExit(f"--set: {exc}") from exc

    torch.set_num_threads(args.threads)
    folder = scan_folder(args.folder)
    labels = {key: i for i, key in enumerate(folder.products)}

    def held_out(path: Path) -> bool:
        return is_held_out(hashlib.sha256(path.read_bytes()).hexdigest())

    catalog = [Photo(str(p), labels[k], "catalog") for p, k in folder.catalog]
    review_photos = [Photo(str(p), labels[k], "review") for p, k in folder.reviews]
    if args.split == "hash":
        held = [held_out(p) for p, _ in folder.reviews]
    elif args.split == "block":
        held = [False] * len(review_photos)
        by_product: dict[str, list[int]] = {}
        for i, (_, k) in enumerate(folder.reviews):
            by_product.setdefault(k, []).append(i)
        for rows in by_product.values():
            rows = sorted(rows, key=lambda i: folder.reviews[i][0])
            for i in rows[len(rows) - max(1, round(0.15 * len(rows))) :]:
                held[i] = True
    else:
        vecs, kept = embed_photos(make_embedder("mobilenet_v2"), review_photos)
        if len(kept) != len(review_photos):
            raise SystemExit("some review photos could not be decoded")
        held = distinct_split(vecs, [p.label for p in review_photos]).tolist()
    reviews = list(zip(review_photos, held))
    train_reviews = [p for p, h in reviews if not h]
    if args.limit:
        train_reviews = train_reviews[:: max(1, len(train_reviews) // args.limit)][: args.limit]
    test = [p for p, h in reviews if h]
    print(f"{len(catalog)} catalog, {len(train_reviews)} training reviews, {len(test)} held out", flush=True)

    def measure(embedder) -> dict:
        vecs, kept = embed_photos(embedder, catalog + train_reviews + test)
        rows = [(catalog + train_reviews + test)[i] for i in kept]
        n_cat, n_gal = len(catalog), len(catalog) + len(train_reviews)
        q, ql = vecs[n_gal:], [p.label for p in rows[n_gal:]]
        return {
            "with_reviews": recall_at(q, ql, vecs[:n_gal], [p.label for p in rows[:n_gal]]),
            "catalog_only": recall_at(q, ql, vecs[:n_cat], [p.label for p in rows[:n_cat]]),
            # R@1 / R@5 as search ranks products (SearchConfig.product_images)
            f"with_reviews_best_{best}": product_recall(q, ql, vecs[:n_gal], [p.label for p in rows[:n_gal]], best),
        }

    report: dict = {"threads": args.threads}
    if not (args.no_eval or args.no_pretrained):
        report["pretrained"] = measure(make_embedder("mobilenet_v2"))
        print("pretrained", json.dumps(report["pretrained"]), flush=True)
    named = ("steps", "mining", "margin", "backbone_lr", "lr", "head_warmup_steps", "head_warmup_lr")
    named += ("batchnorm", "train_from", "views")
    flags = {k: getattr(args, k) for k in named if getattr(args, k) is not None}  # None: TrainConfig's
    cfg = TrainConfig(**flags | overrides)  # --set wins over the named flags
    last = [0.0]

    def progress(stage: str, done: int, total: int) -> None:
        if time.monotonic() - last[0] > 30 or done == total:
            last[0] = time.monotonic()
            print(f"  {stage} {done}/{total}", flush=True)

    result = train(catalog + train_reviews, config=cfg, progress=progress)
    report["timings"] = result.timings
    report["loss"] = result.loss_history[-3:]
    if not args.no_eval:
        report["fine_tuned"] = measure(result.embedder)
        print("fine-tuned", json.dumps(report["fine_tuned"]), flush=True)
        for k, state in enumerate(result.members):  # with --set soup=N: each run before averaging
            report.setdefault("members", []).append(measured := measure(result.embedder_with(state)))
            print(f"run {k + 1} of the soup", json.dumps(measured), flush=True)
    print("timings", json.dumps(result.timings))
    if args.save:
        result.save(args.save, metrics={"held_out": report.get("fine_tuned")})
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
