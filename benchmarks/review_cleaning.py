"""Review-photo cleaning on the shared Grocery Store set: how many genuine photos are
accepted, rejected and sent to staff at given thresholds, and how many planted photos of
other products are caught.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/review_cleaning.py [--planted 200] [--json OUT]

The score is the production one (catalog/cleaning.py, search/embedding.py): the cosine
similarity of the photo to its product's images, best over the views, with the active
default embedder (MobileNetV2 pretrained) at the production decode size.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vision.embed import make_embedder  # noqa: E402
from vision.imageio import decode_image  # noqa: E402

DECODE_MAX_SIDE = 448  # search/embedding.py


def embed_files(embedder, files: list[Path], batch: int = 32) -> np.ndarray:
    out = []
    for start in range(0, len(files), batch):
        imgs = [decode_image(f.read_bytes(), max_side=DECODE_MAX_SIDE)[0] for f in files[start : start + batch]]
        out.append(embedder.embed(imgs))
    return np.concatenate(out)


def decide(scores: np.ndarray, accept: float, reject: float) -> dict[str, int]:
    return {
        "accepted": int((scores >= accept).sum()),
        "needs_review": int(((scores < accept) & (scores >= reject)).sum()),
        "rejected": int((scores < reject).sum()),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", type=Path, default=ROOT.parent / "shared" / "datasets" / "grocery-store")
    parser.add_argument("--embedder", default="mobilenet_v2")
    parser.add_argument("--accept", type=float, default=None, help="default: the settings' value")
    parser.add_argument("--reject", type=float, default=None)
    parser.add_argument("--planted", type=int, default=200, help="photos of other products planted as reviews")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    accept = args.accept if args.accept is not None else 0.45
    reject = args.reject if args.reject is not None else 0.30

    keys = sorted(p.name for p in (args.dataset / "catalog").iterdir() if p.is_dir())
    embedder = make_embedder(args.embedder)
    catalog_files = {k: sorted((args.dataset / "catalog" / k).iterdir()) for k in keys}
    views = {k: embed_files(embedder, files) for k, files in catalog_files.items()}
    review_files = [(k, f) for k in keys for f in sorted((args.dataset / "reviews" / k).glob("*")) if f.is_file()]
    vecs = embed_files(embedder, [f for _, f in review_files])
    genuine = np.array([float((views[k] @ v).max()) for (k, _), v in zip(review_files, vecs)])

    rng = np.random.default_rng(0)
    picks = rng.choice(len(review_files), args.planted, replace=False)
    planted = []
    for i in picks:
        true_key = review_files[i][0]
        wrong = rng.choice([k for k in keys if k != true_key])
        planted.append(float((views[wrong] @ vecs[i]).max()))
    planted = np.array(planted)

    report = {
        "embedder": embedder.version,
        "thresholds": {"accept_at": accept, "reject_below": reject},
        "genuine": {"n": len(genuine), **decide(genuine, accept, reject)},
        "planted": {"n": len(planted), **decide(planted, accept, reject)},
        "score_percentiles": {
            "genuine": {p: round(float(np.percentile(genuine, p)), 3) for p in (1, 5, 25, 50, 75, 95)},
            "planted": {p: round(float(np.percentile(planted, p)), 3) for p in (5, 25, 50, 75, 95, 99)},
        },
    }
    g, pl = report["genuine"], report["planted"]
    print(f"embedder {report['embedder']}, accept >= {accept}, reject < {reject}")
    print("| photos | n | accepted | needs_review | rejected |\n|---|---|---|---|---|")
    print(f"| genuine reviews | {g['n']} | {g['accepted']} | {g['needs_review']} | {g['rejected']} |")
    print(f"| planted (other products) | {pl['n']} | {pl['accepted']} | {pl['needs_review']} | {pl['rejected']} |")
    print("score percentiles:", json.dumps(report["score_percentiles"]))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
