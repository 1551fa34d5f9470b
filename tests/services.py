"""A pytest plugin that starts real PostgreSQL and Redis servers for the test run.

Loaded with ``-p tests.services`` (see pyproject.toml). Each server gets a temporary data
directory and a free port on 127.0.0.1 and is stopped when the run ends. The suite then
runs on PostgreSQL; integration tests use Redis and real Celery worker processes.

--services=auto (the default outside CI): use the servers when their binaries exist,
    else run on SQLite and skip the tests marked ``services``.
--services=required (the default when CI=true): a missing server fails the run.
--services=none: SQLite only, quick local runs.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

PG_BIN_GLOB = "/usr/lib/postgresql/*/bin"
REDIS_ENV = "VISUALSHOP_TEST_REDIS_URL"
_started: list[tuple[str, subprocess.Popen | None, Path]] = []


class ServiceUnavailable(RuntimeError):
    pass


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--services",
        choices=["auto", "required", "none"],
        default=None,
        help="start PostgreSQL and Redis for the run (default: required when CI=true, else auto)",
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise ServiceUnavailable(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


def _as_postgres(cmd: list[str]) -> list[str]:
    # PostgreSQL refuses to run as root.
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


def start_postgres() -> str:
    bins = sorted(
        glob.glob(PG_BIN_GLOB), key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit() else 0
    )
    if not bins:
        raise ServiceUnavailable("PostgreSQL is not installed (apt-get install postgresql)")
    bin_dir = Path(bins[-1])
    tmp = Path(tempfile.mkdtemp(prefix="visualshop-pg-"))
    data, log = tmp / "data", tmp / "postgres.log"
    if os.geteuid() == 0:
        shutil.chown(tmp, "postgres", "postgres")
    port = _free_port()
    subprocess.run(
        _as_postgres(
            [
                str(bin_dir / "initdb"),
                "-D",
                str(data),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
                "--no-sync",
            ]
        ),
        check=True,
        capture_output=True,
    )
    opts = (
        f"-p {port} -k {tmp} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off -c max_connections=50"
    )
    proc = subprocess.run(
        _as_postgres([str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-o", opts, "start"]),
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise ServiceUnavailable(
            f"PostgreSQL did not start: {proc.stderr or proc.stdout} {log.read_text() if log.exists() else ''}"
        )
    _started.append(("postgres", None, tmp))
    _wait_port(port, 15)
    return f"postgres://postgres@127.0.0.1:{port}/visualshop"


def start_redis() -> str:
    exe = shutil.which("redis-server")
    if not exe:
        raise ServiceUnavailable("Redis is not installed (apt-get install redis-server)")
    tmp = Path(tempfile.mkdtemp(prefix="visualshop-redis-"))
    port = _free_port()
    proc = subprocess.Popen(
        [exe, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no", "--dir", str(tmp)],
        stdout=open(tmp / "redis.log", "wb"),
        stderr=subprocess.STDOUT,
    )
    _started.append(("redis", proc, tmp))
    _wait_port(port, 10)
    return f"redis://127.0.0.1:{port}/0"


def _stop_all() -> None:
    while _started:
        name, proc, tmp = _started.pop()
        if name == "postgres":
            bin_dir = sorted(glob.glob(PG_BIN_GLOB))[-1]
            subprocess.run(
                _as_postgres([f"{bin_dir}/pg_ctl", "-D", str(tmp / "data"), "-m", "immediate", "stop"]),
                capture_output=True,
            )
        elif proc is not None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config, parser, args) -> None:
    # This runs before pytest-django reads the settings, so DATABASE_URL set here is used.
    ci = os.environ.get("CI", "").lower() in ("1", "true", "yes")
    mode = early_config.known_args_namespace.services or ("required" if ci else "auto")
    if mode == "none" or early_config.known_args_namespace.help:
        return
    try:
        os.environ["DATABASE_URL"] = start_postgres()
        os.environ[REDIS_ENV] = start_redis()
    except (ServiceUnavailable, subprocess.CalledProcessError) as exc:
        _stop_all()
        os.environ.pop(REDIS_ENV, None)
        if mode == "required":
            raise pytest.UsageError(f"--services=required: {exc}") from exc
        print(f"\nservices: {exc}; running on SQLite and skipping the tests marked 'services'")


def pytest_report_header(config: pytest.Config) -> str:
    db = os.environ.get("DATABASE_URL", "sqlite (embedded default)")
    return f"services: database={db.split('@')[-1]} redis={os.environ.get(REDIS_ENV, 'none')}"


def pytest_unconfigure(config: pytest.Config) -> None:
    _stop_all()
