"""The index file: a FAISS payload, its metadata and a checksummed trailer.

``payload | metadata JSON | trailer (metadata length, SHA-256, magic)``, written to a temp
file in the target folder and ``os.replace``-d, so a reader sees the old file or the new
one, never half of one; :func:`read_index_file` refuses a truncated or corrupted file
with :class:`IndexCorrupt` instead of serving garbage. :mod:`vision.index` says what the
payload and the metadata are.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import faiss

_MAGIC = b"VSIDXv1\n"
_TRAILER = struct.Struct("<Q32s8s")  # metadata length, sha256(payload + metadata), magic
FORMAT = 1  # the metadata's "format"
_CHUNK = 8 << 20


class IndexCorrupt(Exception):
    """The index file is truncated, corrupted, or not an index file at all."""


def write_index_file(path: str | os.PathLike, write_payload: Callable, meta: dict) -> None:
    """payload | metadata JSON | trailer, via temp file + fsync + os.replace.

    The checksum covers payload and metadata, so any flipped byte and any truncation
    (the trailer sits at the very end) is detected on load. One file rather than a JSON
    sidecar: two files cannot be replaced together atomically, and a reader between the
    two renames would pair a new index with old metadata.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            digest = hashlib.sha256()
            size = 0

            def sink(chunk: bytes) -> int:
                nonlocal size
                f.write(chunk)
                digest.update(chunk)
                size += len(chunk)
                return len(chunk)

            write_payload(faiss.PyCallbackIOWriter(sink))
            blob = json.dumps({**meta, "payload_bytes": size}, sort_keys=True).encode()
            digest.update(blob)
            f.write(blob)
            f.write(_TRAILER.pack(len(blob), digest.digest(), _MAGIC))
            f.flush()
            os.fsync(f.fileno())
        # Derived data, not a secret; web processes may read it under another user.
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:  # make the rename itself durable
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def read_index_file(path: str | os.PathLike, read_payload: Callable) -> tuple[Any, dict]:
    """Check trailer and checksum, then deserialise from the same open file (a concurrent
    save replaces the path, never this inode)."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size < _TRAILER.size:
            raise IndexCorrupt(f"{path}: too short to be an index file ({size} bytes)")
        f.seek(size - _TRAILER.size)
        meta_len, checksum, magic = _TRAILER.unpack(f.read(_TRAILER.size))
        if magic != _MAGIC:
            raise IndexCorrupt(f"{path}: no index trailer (truncated or not an index)")
        body = size - _TRAILER.size
        if meta_len > body:
            raise IndexCorrupt(f"{path}: metadata length out of range")
        payload_len = body - meta_len
        f.seek(0)
        digest = hashlib.sha256()
        remaining = body
        while remaining:
            chunk = f.read(min(_CHUNK, remaining))
            if not chunk:
                raise IndexCorrupt(f"{path}: file shrank while reading")
            digest.update(chunk)
            remaining -= len(chunk)
        if digest.digest() != checksum:
            raise IndexCorrupt(f"{path}: checksum mismatch")
        f.seek(payload_len)
        try:
            meta = json.loads(f.read(meta_len))
        except ValueError as exc:
            raise IndexCorrupt(f"{path}: unreadable metadata") from exc
        if meta.get("format") != FORMAT or meta.get("payload_bytes") != payload_len:
            raise IndexCorrupt(f"{path}: unknown format or payload size mismatch")
        f.seek(0)
        left = payload_len

        def source(n: int) -> bytes:
            nonlocal left
            chunk = f.read(min(n, left))
            left -= len(chunk)
            return chunk

        try:
            index = read_payload(faiss.PyCallbackIOReader(source), meta)
        except RuntimeError as exc:
            raise IndexCorrupt(f"{path}: faiss could not read the payload: {exc}") from exc
    return index, meta
