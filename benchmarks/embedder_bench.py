"""The embedder learning loop end to end on the platform, then search quality on the
shared query photos with the version it rolled out.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/embedder_bench.py --threads 2 --json benchmarks/out/embedder.json

1. a throwaway platform (SQLite, temporary media) imports the shared catalog: product
   images and review photos, never queries/;
2. the production sweep embeds everything with the pretrained MobileNetV2 and cleans the
   review photos (accepted ones become training positives); with ``--staff-clears-queue``
   a staff member then works through the photos sent to staff, labelling each as the
   shared folder does (every photo there is of its product, so all are accepted), as a
   shop's staff would before the monthly retraining;
3. search.training.embedder_learn: train, embed every image into the new version,
   compare it with the active one on the held-out review photos, switch if it passes;
4. evaluate_folder (what `manage.py evaluate_search --embedder active` runs) on queries/,
   against catalog/ only and against catalog/ + reviews/, pretrained and fine-tuned.

Training arguments are TrainConfig's (the train_embedder command's defaults) unless given.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import _platform  # noqa: E402


def review_counts() -> dict[str, int]:
    from django.db.models import Count

    from catalog.models import ReviewImage

    return dict(ReviewImage.objects.values_list("status").annotate(n=Count("pk")).order_by("status"))


def clear_staff_queue() -> int:
    """A staff member labels every photo waiting for staff: accepted, as the folder says
    each photo is of its product (the admin's "Label as accepted" action)."""
    from django.contrib.auth import get_user_model

    from catalog.models import ReviewImage
    from catalog.services import review_image_label

    staff = get_user_model().objects.create_user("bench-staff", is_staff=True)
    queue = list(ReviewImage.objects.filter(status=ReviewImage.Status.NEEDS_REVIEW))
    for review in queue:
        review_image_label(review=review, label=ReviewImage.Label.ACCEPTED, user=staff)
    return len(queue)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--folder", type=Path, default=_platform.SHARED)
    ap.add_argument("--threads", type=int, default=1, help="torch threads for training and evaluation")
    ap.add_argument("--steps", type=int)
    ap.add_argument("--views", type=int, help="cached crops per photo; 0: a fresh crop at every step")
    ap.add_argument("--train-from", type=int, help="first trained backbone block (features[N:])")
    ap.add_argument("--batchnorm", choices=("frozen", "train"), help="BatchNorm statistics while training")
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="any other TrainConfig field (repeatable), e.g. --set soup=2",
    )
    ap.add_argument(
        "--staff-clears-queue",
        action="store_true",
        help="accept the review photos that cleaning sent to staff (the folder's labels) before training",
    )
    ap.add_argument("--detector", default=None, help="search detector for the evaluation (default: the platform's)")
    ap.add_argument(
        "--product-images",
        type=int,
        action="append",
        default=[],
        metavar="K",
        help="also evaluate the fine-tuned embedder with reviews when a product scores as the mean of its K best"
        " images (SearchConfig.product_images; repeatable)",
    )
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    _platform.setup(VISUALSHOP_TORCH_THREADS=str(args.threads))
    import torch
    from django.core.management import call_command

    from search import training
    from search.embedding import embedder_active
    from search.pipeline import search_config
    from vision.evaluate import evaluate_folder
    from vision.train import TrainConfig, parse_overrides

    torch.set_num_threads(args.threads)
    last = [0.0]

    def progress(stage: str, done: int, total: int) -> None:
        if time.monotonic() - last[0] > 30 or done == total:
            last[0] = time.monotonic()
            print(f"  {stage} {done}/{total}", flush=True)

    t0 = time.perf_counter()
    call_command("import_catalog", str(args.folder), "--no-progress")
    embedded = _platform.embed_all()
    pretrained = embedder_active()
    print(f"imported and embedded {embedded} photos in {time.perf_counter() - t0:.0f} s", flush=True)
    cleaning = review_counts()
    print("review photos after cleaning:", cleaning, flush=True)
    if args.staff_clears_queue:
        cleaning["staff_accepted"] = clear_staff_queue()
        print(f"staff accepted the {cleaning['staff_accepted']} photos in the queue", flush=True)

    flags = {"steps": args.steps, "views": args.views, "train_from": args.train_from, "batchnorm": args.batchnorm}
    try:
        overrides = parse_overrides(args.set)
    except ValueError as exc:
        raise SystemExit(f"--set: {exc}") from exc
    config = TrainConfig(**{k: v for k, v in flags.items() if v is not None}, **overrides)
    t1 = time.perf_counter()
    outcome = training.embedder_learn(config=config, activate=True, progress=progress)
    learn_seconds = time.perf_counter() - t1
    active = embedder_active()
    print(json.dumps(outcome, indent=1), flush=True)

    search = search_config()
    if args.detector:
        search = replace(search, detector=args.detector)
    report: dict = {
        "config": asdict(config),
        "threads": args.threads,
        "learn_seconds": round(learn_seconds, 1),
        "outcome": outcome,
        "review_photos": cleaning,
        "training": active.metrics.get("training") if active.pk != pretrained.pk else None,
        "queries": {},
    }
    lines = ["| embedder | gallery | R@1 | R@5 | R@10 |", "|---|---|---|---|---|"]
    embedders = (("pretrained", pretrained), ("fine-tuned (active)", active))
    runs = [(label, row, catalog_only, search) for label, row in embedders for catalog_only in (False, True)]
    runs += [
        (f"fine-tuned (active), a product's best {n}", active, False, replace(search, product_images=n))
        for n in args.product_images
    ]
    for label, row, catalog_only, run_config in runs:
        r = evaluate_folder(
            args.folder, embedder=row.name, detector=search.detector, catalog_only=catalog_only, config=run_config
        )
        gallery = "catalog only" if catalog_only else "catalog + reviews"
        report["queries"][f"{label} / {gallery}"] = {"recall": r.recall, "mrr": r.mrr, "queries": r.n_queries}
        lines.append(f"| {label} | {gallery} | {r.recall[1]:.3f} | {r.recall[5]:.3f} | {r.recall[10]:.3f} |")
        print(lines[-1], flush=True)
    print(f"\ndetector {search.detector}; {args.threads} torch thread(s); learning loop {learn_seconds:.0f} s")
    print("\n".join(lines))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    main()
