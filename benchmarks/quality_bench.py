#!/usr/bin/env python
"""Search quality on an interchange folder (default: the shared Grocery Store photos).

    OMP_NUM_THREADS=1 python benchmarks/quality_bench.py --json benchmarks/out/quality_bench.json

Rows: raw pixels, MobileNetV2 on the whole image (detector "none"), MobileNetV2 on the
box the pipeline chooses (detector "nanodet"); each against catalog/ only and against
catalog/ + reviews/. Every query goes through vision.evaluate.evaluate_folder, i.e. the
serving SearchPipeline.run. Gallery embeddings are cached (--cache) so a second run only
embeds the queries: the first full run embeds ~3,000 photos per embedder.
Prints a markdown table; writes JSON and, with --examples, PNG grids of example queries.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere
from vision.detect import make_detector  # noqa: E402
from vision.embed import make_embedder  # noqa: E402
from vision.evaluate import EvaluationReport, default_cache_dir, evaluate_folder, render_examples  # noqa: E402
from vision.pipeline import SearchConfig  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "grocery-store"
DEFAULT_ROWS = "pixels/none,mobilenet_v2/none,mobilenet_v2/nanodet"


def _progress(label: str):
    last = [0.0]

    def report(stage: str, done: int, total: int) -> None:
        now = time.monotonic()
        if done == total or now - last[0] > 15:
            last[0] = now
            print(f"  [{label}] {stage} {done}/{total}", file=sys.stderr, flush=True)

    return report


def row(name: str, r: EvaluationReport) -> str:
    lat = r.latency_ms
    gallery = f"{'catalog' if r.catalog_only else 'catalog+reviews'} ({r.n_gallery_images})"
    return (
        f"| {name} | {gallery} | {r.n_queries} | {r.recall[1]:.3f} | {r.recall[5]:.3f} | {r.recall[10]:.3f} "
        f"| {r.mrr:.3f} | {r.crop_rate:.2f} | {lat['detect']['p50']:.1f} | {lat['embed']['p50']:.1f} |"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--folder", type=Path, default=SHARED)
    p.add_argument("--rows", default=DEFAULT_ROWS, help="comma-separated embedder/detector pairs")
    p.add_argument(
        "--gallery",
        choices=("both", "catalog", "reviews"),
        default="both",
        help="catalog: catalog/ only; reviews: catalog/ + reviews/; both: one row each",
    )
    p.add_argument("--cache", type=Path, default=None, help="embedding cache (default: <model dir>/embedding-cache)")
    p.add_argument("--max-queries", type=int, default=None, help="evenly spread subset (quick checks)")
    p.add_argument("--json", type=Path, default=Path("benchmarks/out/quality_bench.json"))
    p.add_argument("--examples", type=Path, default=None, help="folder for PNG grids of example queries")
    args = p.parse_args(argv)

    torch.set_num_threads(1)
    cache = args.cache or default_cache_dir()
    gallery_modes = {"both": (True, False), "catalog": (True,), "reviews": (False,)}[args.gallery]
    lines = [
        f"Folder: {args.folder}; one torch thread; cache {cache}",
        "",
        "| embedder / detector | gallery | queries | R@1 | R@5 | R@10 | MRR | crop rate "
        "| detect p50 ms | embed p50 ms |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    out: dict[str, object] = {
        "folder": str(args.folder),
        "at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform()},
        "rows": [],
    }
    embedders: dict[str, object] = {}
    for spec in args.rows.split(","):
        emb_name, det_name = spec.split("/")
        embedder = embedders.setdefault(emb_name, make_embedder(emb_name))
        detector = make_detector(det_name)
        config = replace(SearchConfig(), detector=det_name)
        for catalog_only in gallery_modes:
            label = f"{emb_name} / {det_name}"
            t = time.perf_counter()
            report = evaluate_folder(
                args.folder, embedder=embedder, detector=detector, catalog_only=catalog_only, config=config,
                progress=_progress(label), cache_dir=cache, max_queries=args.max_queries,
            )  # fmt: skip
            print(f"  [{label}] {time.perf_counter() - t:.0f} s; gallery embedding {report.gallery_embed_s:.0f} s "
                  f"({report.gallery_from_cache} from cache)", file=sys.stderr, flush=True)  # fmt: skip
            lines.append(row(label, report))
            out["rows"].append({"name": label, **report.to_dict()})  # type: ignore[union-attr]
            if args.examples:
                stem = f"{emb_name}-{det_name}-{'catalog' if catalog_only else 'reviews'}"
                render_examples(report, args.examples / f"{stem}.png", n=8)
                render_examples(report, args.examples / f"{stem}-failures.png", n=8, failures_only=True)

    print("\n".join(lines))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=2, default=str))
    print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
