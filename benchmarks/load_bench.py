"""Load test: the web app under gunicorn, a separate client process firing photo searches.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/load_bench.py [--workers 2] [--clients 8] [--seconds 60]

Starts its own PostgreSQL (tests/services.py), migrates, imports the shared Grocery Store
catalog with a few review photos per product (embedded in-process), starts gunicorn on
127.0.0.1, warms each worker up, then runs N concurrent clients for a fixed time, each
posting real shared query photos (downscaled to 1024 px on the long side, as the upload
page does) to /api/v1/search/; each client keeps its session cookie, as a shopper's browser
does (a client without one would start a new session with every search). Reports
throughput, latency p50/p95/p99, errors, and the CPU milliseconds per request spent by
the web workers, PostgreSQL and the client (/proc).
All traffic stays on the loopback interface; the run is bounded in time.
"""

from __future__ import annotations

import argparse
import http.cookiejar
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks._platform import SHARED  # noqa: E402
from tests.services import _free_port, _stop_all, _wait_port, start_postgres  # noqa: E402


def small_catalog(dest: Path, reviews_per_product: int) -> Path:
    for folder in sorted((SHARED / "catalog").iterdir()):
        shutil.copytree(folder, dest / "catalog" / folder.name)
        target = dest / "reviews" / folder.name
        target.mkdir(parents=True)
        for f in sorted((SHARED / "reviews" / folder.name).iterdir())[:reviews_per_product]:
            shutil.copy(f, target / f.name)
    shutil.copy(SHARED / "products.csv", dest / "products.csv")
    return dest


def upload_bytes(path: Path) -> bytes:
    img = Image.open(path).convert("RGB")
    scale = 1024 / max(img.size)
    img = img.resize((round(img.width * scale), round(img.height * scale)), Image.Resampling.BILINEAR)
    out = io.BytesIO()
    img.save(out, "JPEG", quality=90)
    return out.getvalue()


def cpu_seconds() -> dict[str, float]:
    """CPU seconds used so far by the web workers, PostgreSQL and this client, from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    used = {"web": 0.0, "database": 0.0, "client": 0.0}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:  # the process ended meanwhile
            continue
        pid = int(stat.parent.name)
        kind = (
            "client" if pid == os.getpid()
            else "web" if b"gunicorn" in cmdline
            else "database" if b"postgres" in cmdline
            else None
        )  # fmt: skip
        if kind:
            used[kind] += (int(fields[11]) + int(fields[12])) / tick  # utime + stime
    return used


def post(opener: urllib.request.OpenerDirector, url: str, photo: bytes, timeout: float = 30) -> int:
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="q.jpg"\r\n'
            "Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        + photo
        + f"\r\n--{boundary}--\r\n".encode()
    )
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    request = urllib.request.Request(url, data=body, headers=headers)
    try:
        with opener.open(request, timeout=timeout) as response:
            response.read()
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--reviews-per-product", type=int, default=5)
    parser.add_argument("--detector", default=None, help="override VISUALSHOP_SEARCH_DETECTOR")
    parser.add_argument("--nanodet-size", type=int, default=None, help="override VISUALSHOP_SEARCH_NANODET_SIZE")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="visualshop-load-"))
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "visualshop.settings",
        "DATABASE_URL": start_postgres(),
        "MEDIA_ROOT": str(tmp / "media"),
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1",
        "DJANGO_SECURE_SSL_REDIRECT": "0",
        "DJANGO_SESSION_COOKIE_SECURE": "0",  # plain HTTP on the loopback
        "VISUALSHOP_SEARCH_ANON_RATE": "100000/min",
        "OMP_NUM_THREADS": "1",
    }
    if args.detector:
        env["VISUALSHOP_SEARCH_DETECTOR"] = args.detector
    if args.nanodet_size:
        env["VISUALSHOP_SEARCH_NANODET_SIZE"] = str(args.nanodet_size)
    server = None
    try:
        run = lambda *cmd: subprocess.run([sys.executable, "manage.py", *cmd], cwd=ROOT, env=env, check=True)  # noqa: E731
        subprocess.run(["runuser", "-u", "postgres", "--", "true"], check=False)
        createdb = env["DATABASE_URL"].rsplit("/", 1)
        subprocess.run(
            [sys.executable, "-c", f"import psycopg2; c=psycopg2.connect('{createdb[0]}/postgres'); "
             "c.autocommit=True; c.cursor().execute('CREATE DATABASE visualshop')"],
            check=True,
        )  # fmt: skip
        run("migrate", "-v0")
        run("import_catalog", str(small_catalog(tmp / "catalog", args.reviews_per_product)), "--no-progress")
        port = _free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "visualshop.wsgi", "--workers", str(args.workers),
             "--bind", f"127.0.0.1:{port}", "--timeout", "60", "--log-level", "warning"],
            cwd=ROOT, env=env, start_new_session=True,
        )  # fmt: skip
        _wait_port(port, 60)
        url = f"http://127.0.0.1:{port}/api/v1/search/"
        photos = [upload_bytes(p) for p in sorted(SHARED.glob("queries/*/*"))[::5]]

        def shopper() -> urllib.request.OpenerDirector:  # an HTTP client with its own cookie jar
            return urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))

        for _ in range(4 * args.workers):  # models load at worker start (gunicorn.conf.py); this warms the rest
            post(shopper(), url, photos[0], timeout=120)

        latencies, statuses, lock = [], [], threading.Lock()
        deadline = time.monotonic() + args.seconds

        def client(seed: int) -> None:
            rng, opener = random.Random(seed), shopper()
            while time.monotonic() < deadline:
                t0 = time.perf_counter()
                status = post(opener, url, rng.choice(photos))
                with lock:
                    latencies.append((time.perf_counter() - t0) * 1000)
                    statuses.append(status)

        threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
        cpu_before, t0 = cpu_seconds(), time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - t0
        cpu_after = cpu_seconds()
        errors = sum(1 for s in statuses if s != 200)
        report = {
            "workers": args.workers,
            "clients": args.clients,
            "seconds": round(elapsed, 1),
            "detector": env.get("VISUALSHOP_SEARCH_DETECTOR", "nanodet"),
            "nanodet_size": int(env.get("VISUALSHOP_SEARCH_NANODET_SIZE", 384)),
            "requests": len(statuses),
            "errors": errors,
            "throughput_rps": round(len(statuses) / elapsed, 2),
            **{f"p{p}_ms": round(float(np.percentile(latencies, p)), 1) for p in (50, 95, 99)},
            # Where the two cores went: CPU milliseconds per request, by process kind.
            "cpu_ms_per_request": {
                k: round((cpu_after[k] - cpu_before[k]) * 1000 / max(1, len(statuses)), 1) for k in cpu_after
            },
        }
        print(json.dumps(report, indent=2))
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(report, indent=2))
    finally:
        if server is not None:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(30)
        _stop_all()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
