#!/usr/bin/env python
"""CTR reranking, offline, on SIMULATED click logs (ranking/simulator.py): not real shoppers.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/ranking_bench.py [--searches 3000] [--online 500]

1. A throwaway platform (benchmarks/_platform.py): the shared Grocery Store catalog/
   imported *without* its reviews (the simulator searches with the review photos, which
   must not be in the index), seeded prices and two "Sim Market" merchants with price
   variants (simulation_setup), everything embedded with the production embedder
   (MobileNetV2) and indexed. The detector is off (VISUALSHOP_SEARCH_DETECTOR=none): the
   whole photo is embedded, ~3x faster per search; the box-label feature is then
   constant ("image") and carries nothing here.
2. Simulated shoppers run --searches searches through the real photo_search in visual
   order (no ranker live) and click with position bias (1/position).
3. LR and GBDT+LR are trained by the production service (ranker_train) on the oldest
   70% of the searches and evaluated on the latest 30%: AUC and NDCG@10 against the
   logged clicks (what the service stores), and NDCG@10 against the simulator's own
   position-free attractiveness (graded, only a simulator can know it).
4. Rerank cost: the live hook (ranking.live.ranker_rerank) on 50 candidates, warm.
5. With --online N: N more searches with GBDT+LR live (blend and freshness included),
   clicks per search compared with the last N in visual order.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import _platform  # noqa: E402


def _catalog_only(folder: Path) -> Path:
    """The interchange folder without reviews/ and queries/ (symlinks)."""
    out = Path(tempfile.mkdtemp(prefix="ranking-bench-catalog-"))
    (out / "catalog").symlink_to(folder / "catalog")
    if (folder / "products.csv").exists():
        (out / "products.csv").symlink_to(folder / "products.csv")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--folder", type=Path, default=_platform.SHARED)
    p.add_argument("--searches", type=int, default=3000)
    p.add_argument("--shoppers", type=int, default=150)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--test-fraction", type=float, default=0.3)
    p.add_argument("--online", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=Path("benchmarks/out/ranking_bench.json"))
    args = p.parse_args()
    _platform.setup(VISUALSHOP_SEARCH_DETECTOR="none")
    import torch

    torch.set_num_threads(1)
    import logging

    logging.disable(logging.INFO)
    from catalog.importer import catalog_import
    from ranking import live
    from ranking.features import FEATURES, logged_queries, training_set
    from ranking.learners import compile_scorer, ndcg_at
    from ranking.services import ranker_load, ranker_make_live, ranker_train
    from ranking.simulator import SimConfig, simulate, simulation_setup
    from search.embedding import embedder_active
    from search.indexing import index_rebuild
    from search.live import live_index_reset
    from search.models import SearchQuery
    from search.searching import Ranked, RerankContext

    t0 = time.perf_counter()
    catalog_import(root=_catalog_only(args.folder), merchant_name="Demo Grocer")
    setup = simulation_setup(seed=args.seed)
    _platform.embed_all()
    index_rebuild(embedder=embedder_active())
    live_index_reset()
    prep_s = time.perf_counter() - t0
    print(f"catalog ready in {prep_s:.0f} s: {setup}", file=sys.stderr, flush=True)

    def progress(done, total):
        if done % 500 == 0 or done == total:
            print(f"  simulated {done}/{total}", file=sys.stderr, flush=True)

    t0 = time.perf_counter()
    config = SimConfig(searches=args.searches, shoppers=args.shoppers, k=args.k, seed=args.seed)
    report = simulate(folder=args.folder, config=config, progress=progress)
    sim_s = time.perf_counter() - t0

    rows, rankers = {}, {}
    for kind in ("lr", "gbdt_lr"):
        t0 = time.perf_counter()
        r = ranker_train(kind=kind, activate="never", test_fraction=args.test_fraction)
        rankers[kind] = r
        rows[kind] = {**r.metrics["model"], "train_s": round(time.perf_counter() - t0, 2),
                      "fit_s": r.metrics["fit_seconds"]}  # fmt: skip
    rows["visual_order"] = dict(rankers["gbdt_lr"].metrics["visual_order"])
    m = rankers["gbdt_lr"].metrics

    # NDCG@10 against the simulator's attractiveness on the same test split
    queries = logged_queries()
    ts = training_set(queries)
    n_train = int(round(len(queries) * (1 - args.test_fraction)))
    test = np.flatnonzero(ts.query_index >= n_train)
    truth = np.array([report.truth[queries[i].query_id].get(pid, 0.0) for i, q in
                      enumerate(queries) for pid in q.product_ids])  # fmt: skip
    scorers = {k: compile_scorer(ranker_load(r.model)["estimator"]) for k, r in rankers.items()}
    scores = {k: s(ts.X[test]) for k, s in scorers.items()}
    scores["visual_order"] = ts.X[test, FEATURES.index("visual_score")]
    for name, s in scores.items():
        groups = [(truth[test][ts.query_index[test] == qi], s[ts.query_index[test] == qi])
                  for qi in np.unique(ts.query_index[test])]  # fmt: skip
        rows[name]["ndcg@10_truth"] = ndcg_at(10, groups)

    # rerank cost on 50 candidates
    from catalog.models import Product

    ids = list(Product.objects.values_list("pk", flat=True))
    rng = np.random.default_rng(0)
    sessions = list(SearchQuery.objects.values_list("session_key", flat=True).distinct()[:50])
    cost = {}
    prof = None
    if os.environ.get("RANKING_BENCH_PROFILE"):
        import cProfile

        prof = cProfile.Profile()
    for kind, r in rankers.items():
        ranker_make_live(ranker=r)
        live.ranker_cache_reset()
        times = []
        for i in range(300):
            pick = rng.choice(ids, size=min(50, len(ids)), replace=False)
            cands = [Ranked(int(pid), float(s)) for pid, s in zip(pick, sorted(rng.uniform(0.3, 0.9, len(pick)))[::-1])]
            # k=25: all 50 candidates scored (the worst case; live scores the first 2k)
            ctx = RerankContext(label="image", user_id=None, session_key=sessions[i % len(sessions)], k=25)
            t = time.perf_counter()
            if prof:
                prof.enable()
            out = live.ranker_rerank(cands, ctx)
            if prof:
                prof.disable()
            if i >= 10:
                times.append((time.perf_counter() - t) * 1000)
            assert out.version == r.version
        cost[kind] = {"p50_ms": round(float(np.percentile(times, 50)), 3),
                      "p95_ms": round(float(np.percentile(times, 95)), 3)}  # fmt: skip

    if prof:
        import pstats

        pstats.Stats(prof).sort_stats("cumulative").print_stats(25)
    online = None
    if args.online:
        last = SearchQuery.objects.order_by("-created_at")[: args.online]
        visual_cps = sum(q.impressions.filter(clicks__isnull=False).count() for q in last) / args.online
        ranker_make_live(ranker=rankers["gbdt_lr"])
        live.ranker_cache_reset()
        cfg = SimConfig(searches=args.online, shoppers=args.shoppers, k=args.k, seed=args.seed + 1)
        ranked_report = simulate(folder=args.folder, config=cfg)
        first_hits = SearchQuery.objects.filter(ranker_version=rankers["gbdt_lr"].version).count()
        online = {
            "searches": args.online,
            "clicks_per_search_visual_order": round(visual_cps, 4),
            "clicks_per_search_gbdt_lr_live": round(ranked_report.clicks / args.online, 4),
            "ranked_searches_logged": first_hits,
        }

    def f(v):
        return "-" if v is None else f"{v:.4f}"

    lines = [
        f"Simulated logs: {report.searches} searches, {report.clicks} clicks, {args.shoppers} shoppers, "
        f"k={args.k}; train {m['train']['queries']} / test {m['test']['queries']} searches "
        f"({m['test']['queries_with_click']} with a click); detector none; one torch thread",
        "",
        "| ranker | AUC | NDCG@10 (clicks) | NDCG@10 (simulator truth) | fit s | rerank 50 p50 ms | p95 ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in ("visual_order", "lr", "gbdt_lr"):
        r = rows[name]
        c = cost.get(name, {})
        lines.append(
            f"| {name} | {f(r.get('auc'))} | {f(r.get('ndcg@10'))} | {f(r.get('ndcg@10_truth'))} "
            f"| {r.get('fit_s', '-')} | {c.get('p50_ms', '-')} | {c.get('p95_ms', '-')} |"
        )
    if online:
        lines.append("")
        lines.append(f"online: {json.dumps(online)}")
    lines.append(f"\nprepare {prep_s:.0f} s, simulate {sim_s:.0f} s ({1000 * sim_s / report.searches:.0f} ms/search)")
    print("\n".join(lines))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"rows": rows, "rerank_cost": cost, "online": online, "setup": setup,
                                     "simulated": {"searches": report.searches, "clicks": report.clicks,
                                                   "clicks_by_position": report.clicks_by_position},
                                     "metrics_gbdt_lr": m}, indent=2, default=str))  # fmt: skip


if __name__ == "__main__":
    main()
