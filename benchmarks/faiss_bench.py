#!/usr/bin/env python
"""FAISS index benchmark on structured synthetic embeddings (a script, not a test).

    python benchmarks/faiss_bench.py --n 1000000 --d 256 --queries 1000 --json OUT.json

Compares Flat (exact), IVF-Flat (nlist from vision.index.choose_factory, nprobe tuned)
and IVF-PQ without and with exact re-ranking (IndexRefineFlat): build time, ms/query on
one thread (queries one at a time, and as one batch), recall@10 against exact search,
and the serialized index size. Prints a markdown table; --json writes everything.

Why synthetic data with structure: isotropic gaussian noise has no neighbourhoods, so
every ANN method looks hopeless on it (docs/SERVICES.md: IVF recall@10 0.22 on noise,
0.85 on structured data, same settings). CNN embeddings are L2-normalised, share a
common mean direction, and live near a low-dimensional set of product clusters grouped
into categories; the generator mimics that (see make_dataset). How hard the data is
decides the nprobe a recall needs, so the generator's knobs are flags (--spread, --local,
--intrinsic, --noise: larger spread and noise, or a smaller intrinsic dimension shared
by all clusters, make it harder) and the report states the data's cosine statistics.
Real embeddings should be re-measured with vision.index_tuning.tune_nprobe once they exist.
nprobe is tuned on held-out queries, then reported on others.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

# BLAS and OpenMP read these once, at import; the numbers below are per core.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import faiss  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere
from vision.index import VectorIndex, choose_factory  # noqa: E402
from vision.index_tuning import recall_at_k, tune_nprobe  # noqa: E402

K = 10


# ------------------------------------------------------------------------------ data


@dataclass
class DataSpec:
    clusters: int = 3000  # "products"; sizes are lognormal (a long tail of rare ones)
    categories: int = 60  # products of a category overlap: that is where ANN gets hard
    intrinsic: int = 64  # dimension of the subspace holding all the structure
    local: int = 16  # each cluster varies along its own few directions...
    spread: float = 1.5  # ...this far, relative to the distance between categories
    product_spread: float = 0.3  # product centres around their category centre
    noise: float = 0.2  # isotropic noise in all d dimensions (relative)
    mean_offset: float = 0.6  # shared mean direction: random pairs have cosine ~0.3
    seed: int = 0


def make_dataset(n: int, d: int, n_queries: int, spec: DataSpec) -> tuple[np.ndarray, ...]:
    """Database [n, d], tuning queries and test queries [n_queries, d], float32, L2-normalised.

    Two-level gaussian mixture (categories -> products) in an ``intrinsic``-dimensional
    subspace; each product cluster is a low-rank gaussian (``local`` directions, decaying
    spectrum) of lognormal radius; then a shared mean, ambient noise and normalisation.
    Queries are fresh draws from the same mixture (new photos of catalog products).
    """
    rng = np.random.default_rng(spec.seed)
    r, c, loc = spec.intrinsic, spec.clusters, spec.local
    category = rng.standard_normal((spec.categories, r)).astype(np.float32)
    centers = category[rng.integers(spec.categories, size=c)]
    centers += spec.product_spread * rng.standard_normal((c, r)).astype(np.float32)
    weights = rng.lognormal(0.0, 1.0, c)
    weights /= weights.sum()
    radius = (spec.spread * rng.lognormal(0.0, 0.3, c)).astype(np.float32)
    spectrum = (np.sqrt(r / loc) / np.sqrt(np.arange(1, loc + 1))).astype(np.float32)
    directions = np.linalg.qr(rng.standard_normal((c, r, loc)))[0].transpose(0, 2, 1)
    directions = directions.astype(np.float32)  # [c, loc, r], orthonormal rows
    basis = np.linalg.qr(rng.standard_normal((d, r)))[0].astype(np.float32).T  # [r, d]
    mean = rng.standard_normal(d).astype(np.float32)
    mean *= spec.mean_offset * np.sqrt(r) / np.linalg.norm(mean)

    def sample(m: int, rng: np.random.Generator) -> np.ndarray:
        counts = rng.multinomial(m, weights)
        z = np.empty((m, r), np.float32)
        start = 0
        for j in np.flatnonzero(counts):
            g = rng.standard_normal((counts[j], loc), dtype=np.float32) * spectrum
            z[start : start + counts[j]] = centers[j] + radius[j] * (g @ directions[j])
            start += counts[j]
        z = z[rng.permutation(m)]
        x = np.empty((m, d), np.float32)
        for s in range(0, m, 65_536):  # chunks: keep float temporaries ~64 MB
            chunk = z[s : s + 65_536] @ basis + mean
            chunk += spec.noise * rng.standard_normal(chunk.shape, dtype=np.float32)
            chunk /= np.linalg.norm(chunk, axis=1, keepdims=True)
            x[s : s + len(chunk)] = chunk
        return x

    return (
        sample(n, rng),
        sample(n_queries, np.random.default_rng(spec.seed + 1)),
        sample(n_queries, np.random.default_rng(spec.seed + 2)),
    )


# --------------------------------------------------------------------------- measuring


@dataclass
class Row:
    """Times are CPU time of the searching thread (time.thread_time) unless *_wall: the
    benchmark machine is shared, and waiting for a core is not the index's cost."""

    name: str
    factory: str
    build_s: float  # wall
    build_cpu_s: float
    ms_single: float  # mean over queries searched one at a time
    ms_single_p95: float
    ms_single_wall: float
    ms_batch: float  # one search() call with every query, divided by their number
    ms_batch_wall: float
    recall: float  # 10-recall@10: share of the exact top 10 found in the top 10
    recall_1at10: float  # is the exact nearest neighbour in the top 10
    bytes: int
    nprobe: int | None = None
    k_factor: int | None = None
    notes: str = ""
    nprobe_curve: list = field(default_factory=list)


def time_search(index: VectorIndex, queries: np.ndarray, truth: np.ndarray, single: int) -> dict:
    index.search(queries[:10], K)  # warm caches and lazily built tables before timing
    cpu, wall = [], []
    for i in range(min(single, len(queries))):
        q = queries[i : i + 1]
        c, t = time.thread_time(), time.perf_counter()
        index.search(q, K)
        cpu.append(time.thread_time() - c)
        wall.append(time.perf_counter() - t)
    c, t = time.thread_time(), time.perf_counter()
    _, found = index.search(queries, K)
    batch_cpu, batch_wall = time.thread_time() - c, time.perf_counter() - t
    return {
        "ms_single": 1e3 * float(np.mean(cpu)),
        "ms_single_p95": 1e3 * float(np.percentile(cpu, 95)),
        "ms_single_wall": 1e3 * float(np.mean(wall)),
        "ms_batch": 1e3 * batch_cpu / len(queries),
        "ms_batch_wall": 1e3 * batch_wall / len(queries),
        "recall": recall_at_k(found, truth, K),
        "recall_1at10": float((found == truth[:, :1]).any(axis=1).mean()),
    }


def ivf_rows(name, index, build, args, xt, gt_t, xq, gt_q, note="", **extra) -> list[Row]:
    """One row per recall target, nprobe tuned on the tuning queries, measured on the test ones."""
    rows = []
    for target in args.targets:
        tuning = tune_nprobe(index, xt, gt_t, target_recall=target, k=K)
        notes = f"tuned for {target}" + ("" if tuning.reached else " (not reached: best recall)") + note
        stats = time_search(index, xq, gt_q, args.single)
        rows.append(
            Row(
                name=name,
                factory=index.factory,
                **build,
                bytes=index.serialized_size(),
                nprobe=tuning.nprobe,
                notes=notes,
                nprobe_curve=list(tuning.tried),
                **stats,
                **extra,
            )
        )
        log(f"  {name} nprobe={tuning.nprobe}: {stats}")
        if not tuning.reached:
            break  # higher targets are out of reach too
    return rows


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--d", type=int, default=256)
    p.add_argument("--queries", type=int, default=1000, help="test queries (as many again tune nprobe)")
    p.add_argument("--single", type=int, default=1000, help="queries timed one at a time (IVF/PQ)")
    p.add_argument("--flat-single", type=int, default=100, help="same, for exact Flat (slow)")
    p.add_argument("--targets", type=lambda s: [float(x) for x in s.split(",")], default=[0.9, 0.95, 0.97, 0.99])
    p.add_argument("--pq-m", type=int, default=64, help="PQ bytes per vector")
    p.add_argument("--k-factor", type=int, default=10, help="re-rank k * this many PQ candidates")
    p.add_argument("--threads", type=int, default=1)
    for name, default in asdict(DataSpec()).items():  # the data generator's knobs
        p.add_argument(f"--{name.replace('_', '-')}", type=type(default), default=default)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    faiss.omp_set_num_threads(args.threads)
    spec = DataSpec(**{f: getattr(args, f) for f in DataSpec.__dataclass_fields__})
    n, d = args.n, args.d

    t = time.perf_counter()
    xb, xt, xq = make_dataset(n, d, args.queries, spec)
    ids = np.arange(n, dtype=np.int64)
    log(f"data {xb.shape} in {time.perf_counter() - t:.1f}s")

    rows: list[Row] = []
    # Exact search: the ground truth, and the Flat row.
    t, c = time.perf_counter(), time.process_time()
    flat = VectorIndex.build(xb, ids, factory="IDMap2,Flat")
    build = {"build_s": time.perf_counter() - t, "build_cpu_s": time.process_time() - c}
    gt_t = flat.search(xt, K)[1]
    truth_scores, gt_q = flat.search(xq, K)
    stats = time_search(flat, xq, gt_q, args.flat_single)
    rows.append(
        Row(
            name="Flat (exact)",
            factory=flat.factory,
            **build,
            bytes=flat.serialized_size(),
            notes=f"single-query time over {min(args.flat_single, args.queries)} queries",
            **stats,
        )
    )
    log(f"  flat: {stats}")
    del flat
    data_stats = {
        "top1_cosine": float(truth_scores[:, 0].mean()),
        "top10_cosine": float(truth_scores[:, -1].mean()),
        "random_pair_cosine": float((xq[:200] @ xb[:2000].T).mean()),
    }
    log(f"data: {data_stats}")

    # IVF-Flat, as the production rule picks it.
    factory = choose_factory(n, d)
    t, c = time.perf_counter(), time.process_time()
    ivf = VectorIndex.build(xb, ids, factory=factory)
    build = {"build_s": time.perf_counter() - t, "build_cpu_s": time.process_time() - c}
    log(f"{factory} built: {build}")
    if ivf.is_ivf:
        rows += ivf_rows("IVF-Flat", ivf, build, args, xt, gt_t, xq, gt_q)

        # IVF-PQ on the same coarse centroids (copied: the IVF-Flat index is freed).
        nlist = ivf.nlist
        centroids = faiss.extract_index_ivf(ivf.faiss_index).quantizer.reconstruct_n(0, nlist)
        del ivf
        quantizer = faiss.IndexFlatIP(d)
        quantizer.add(centroids)
        t, c = time.perf_counter(), time.process_time()
        pq = faiss.IndexIVFPQ(quantizer, d, nlist, args.pq_m, 8, faiss.METRIC_INNER_PRODUCT)
        sample = xb[np.sort(np.random.default_rng(0).choice(n, min(n, 64 * nlist), replace=False))]
        pq.train(sample)
        pq.add_with_ids(xb, ids)
        build = {"build_s": time.perf_counter() - t, "build_cpu_s": time.process_time() - c}
        note = "; build excludes the coarse k-means (reused from IVF-Flat)"
        pq_index = VectorIndex(pq, factory=f"IVF{nlist},PQ{args.pq_m}")
        log(f"IVF-PQ built: {build}")
        rows += ivf_rows("IVF-PQ", pq_index, build, args, xt, gt_t, xq, gt_q, note)

        # Exact re-ranking of the top k*k_factor PQ candidates against the raw vectors.
        refine = faiss.IndexRefineFlat(pq, faiss.swig_ptr(xb))
        refine.k_factor = args.k_factor
        refined = VectorIndex(refine, factory=f"IVF{nlist},PQ{args.pq_m},RFlat")
        rows += ivf_rows(
            f"IVF-PQ + re-rank top {K * args.k_factor}",
            refined,
            build,
            args,
            xt,
            gt_t,
            xq,
            gt_q,
            note + "; size includes the raw vectors",
            k_factor=args.k_factor,
        )

    met = [r for r in rows if r.name == "IVF-Flat" and r.recall >= 0.95 and r.ms_single <= 5.0]
    report = {
        "command": " ".join(["python benchmarks/faiss_bench.py"] + (argv if argv is not None else sys.argv[1:])),
        "n": n, "d": d, "queries": args.queries, "threads": args.threads, "k": K,
        "faiss": faiss.__version__, "numpy": np.__version__, "cpu": _cpu(), "python": platform.python_version(),
        "data_spec": asdict(spec), "data_stats": data_stats,
        "target": "IVF-Flat recall@10 >= 0.95 at <= 5 ms/query (mean CPU), one thread, single queries",
        "target_met": bool(met),
        "rows": [asdict(r) for r in rows],
    }  # fmt: skip
    print(markdown(rows, report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return report


def markdown(rows: list[Row], report: dict) -> str:
    lines = [
        f"n={report['n']} d={report['d']} queries={report['queries']} threads={report['threads']} "
        f"faiss {report['faiss']} ({report['cpu']})",
        "",
        "| index | factory | nprobe | build s: wall / cpu | ms/q single: cpu mean (p95) / wall "
        "| ms/q batched: cpu / wall | recall@10 | 1-recall@10 | size MiB | notes |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.name} | `{r.factory}` | {r.nprobe or '-'} | {r.build_s:.0f} / {r.build_cpu_s:.0f} "
            f"| {r.ms_single:.2f} ({r.ms_single_p95:.2f}) / {r.ms_single_wall:.2f} "
            f"| {r.ms_batch:.2f} / {r.ms_batch_wall:.2f} "
            f"| {r.recall:.3f} | {r.recall_1at10:.3f} | {r.bytes / 2**20:.0f} | {r.notes} |"
        )
    lines += ["", f"target ({report['target']}): {'MET' if report['target_met'] else 'NOT met'}"]
    return "\n".join(lines)


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


if __name__ == "__main__":
    main()
