"""vision.embed: preprocessing, embedders, version ids, checkpoints.

Unit tests use seeded, randomly initialised small torchvision models (no weight files);
tests marked ``weights`` use the real MobileNetV2 file and the shared photos.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from argparse import Namespace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vision import embed
from vision.embed import (
    Embedder,
    PixelEmbedder,
    Preprocess,
    ProjectionHead,
    TorchvisionEmbedder,
    WeightsUnavailable,
    load_checkpoint,
    make_embedder,
    save_checkpoint,
)

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "datasets" / "grocery-store"
SMALL = "mobilenet_v3_small"  # 576-d, fast enough at 64 px for unit tests
TINY = Preprocess(size=64, resize=64)


def _random_images(n: int, seed: int = 0, size: tuple[int, int] = (80, 60)) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)) for _ in range(n)]


@pytest.fixture(scope="module")
def small() -> TorchvisionEmbedder:
    return TorchvisionEmbedder(SMALL, preprocess=TINY, weights=None, seed=0)


# --------------------------------------------------------------------------- Preprocess


def test_preprocess_spec_round_trips_and_is_json():
    pre = Preprocess(size=192, resize=220, interpolation="bicubic")
    spec = pre.spec()
    assert json.loads(json.dumps(spec)) == spec
    assert Preprocess.from_spec(spec) == pre
    assert Preprocess().spec() == Preprocess().spec()  # stable


@pytest.mark.parametrize("kwargs", [{"size": 0}, {"size": 256, "resize": 224}, {"interpolation": "lanczos9"}])
def test_preprocess_rejects_bad_values(kwargs):
    with pytest.raises(ValueError):
        Preprocess(**kwargs)


def test_transform_resizes_short_side_and_centre_crops():
    # given a 2:1 image, red on the left half, blue on the right half
    arr = np.zeros((100, 200, 3), np.uint8)
    arr[:, :100] = (255, 0, 0)
    arr[:, 100:] = (0, 0, 255)
    pre = Preprocess(size=50, resize=50, mean=(0, 0, 0), std=(1, 1, 1))
    # when transformed
    x = pre.transform()(Image.fromarray(arr))
    # then the centre square keeps both halves, 25 columns each, values in 0..1
    assert x.shape == (3, 50, 50)
    assert torch.allclose(x[0, :, :24], torch.ones(50, 24)) and torch.allclose(x[2, :, 26:], torch.ones(50, 24))
    assert x[2, :, :24].abs().max() < 1e-6 and x[0, :, 26:].abs().max() < 1e-6


def test_normalisation_uses_imagenet_statistics():
    img = Image.new("RGB", (30, 30), (124, 116, 104))  # ~ the ImageNet mean
    x = Preprocess(size=16, resize=16).transform()(img)
    assert x.abs().max() < 0.01


# --------------------------------------------------------------------------- PixelEmbedder


def test_pixel_embedder_is_centred_flattened_normalised_pixels():
    rng = np.random.default_rng(3)
    arr = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    e = PixelEmbedder(size=32)
    v = e.embed([Image.fromarray(arr)])
    expected = arr.transpose(2, 0, 1).reshape(-1).astype(np.float64) / 255.0  # CHW order
    expected -= expected.mean()
    expected /= np.linalg.norm(expected)
    assert v.shape == (1, 3072) and v.dtype == np.float32
    np.testing.assert_allclose(v[0], expected, atol=1e-6)


def test_pixel_embedder_constant_image_is_unit_and_orthogonal_to_real_images():
    e = PixelEmbedder(size=8)
    v = e.embed([Image.new("RGB", (20, 20), (90, 90, 90)), Image.new("RGB", (9, 9), (10, 200, 3))] + _random_images(1))
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-6)
    assert abs(float(v[0] @ v[2])) < 1e-6
    assert e.embed([]).shape == (0, 192)
    assert e.version == PixelEmbedder(size=8).version != PixelEmbedder(size=16).version


# --------------------------------------------------------------------------- TorchvisionEmbedder


def test_torchvision_embedder_shapes_and_norms(small):
    assert isinstance(small, Embedder)
    v = small.embed(_random_images(5))
    assert v.shape == (5, 576) and v.dtype == np.float32 and small.dim == 576
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert small.embed([]).shape == (0, 576)


def test_batching_does_not_change_vectors(small):
    images = _random_images(5, seed=1)
    together = small.embed(images)
    in_twos = small.embed(images, batch_size=2)
    one_by_one = np.concatenate([small.embed([im]) for im in images])
    np.testing.assert_allclose(together, in_twos, atol=1e-5)
    np.testing.assert_allclose(together, one_by_one, atol=1e-5)


def test_compiled_inference_matches_the_eager_network(small):
    # embed() runs a traced, frozen copy of small.net; training and the version use small.net
    images = _random_images(3, seed=2)
    with torch.inference_mode():
        eager = small.net(small.preprocess.batch(images)).numpy()
    np.testing.assert_allclose(small.embed(images), eager, atol=1e-5)


def test_compilation_keeps_the_version_and_any_batch_size(small, monkeypatch):
    # given the compiled network (traced at one image) and an embedder built without compiling
    assert isinstance(small.inference_net, torch.jit.ScriptModule)
    monkeypatch.setattr(embed, "optimize_for_inference", lambda net, size: net)
    eager = TorchvisionEmbedder(SMALL, preprocess=TINY, weights=None, seed=0)
    assert eager.inference_net is eager.net
    # then the version is the same (it is derived from the weights and preprocessing only)
    assert eager.version == small.version
    # and so are the vectors, whatever the batch size
    images = _random_images(7, seed=3)
    np.testing.assert_allclose(small.embed(images, batch_size=4), eager.embed(images), atol=1e-5)


def test_a_network_that_cannot_be_compiled_runs_eagerly():
    class DictOut(torch.nn.Module):  # the tracer refuses dict outputs
        def forward(self, x):
            return {"f": x.mean(dim=(2, 3))}

    net = DictOut().eval()
    with pytest.warns(RuntimeWarning, match="runs eagerly"):
        assert embed.optimize_for_inference(net, 8) is net


def test_version_depends_on_weights_preprocessing_and_head(small):
    assert small.version.startswith(f"{SMALL}-") and len(small.version.split("-")[-1]) == 12
    assert TorchvisionEmbedder(SMALL, preprocess=TINY, weights=None, seed=0).version == small.version
    assert TorchvisionEmbedder(SMALL, preprocess=TINY, weights=None, seed=1).version != small.version
    assert TorchvisionEmbedder(SMALL, preprocess=Preprocess(64, 72), weights=None).version != small.version
    torch.manual_seed(0)
    headed = TorchvisionEmbedder(SMALL, projection=ProjectionHead(576, 32), preprocess=TINY, weights=None)
    assert headed.dim == 32 and headed.version.startswith(f"{SMALL}-p32-")


def test_version_is_stable_across_processes(small):
    code = (
        "import torch; torch.set_num_threads(1);"
        "from vision.embed import TorchvisionEmbedder, Preprocess;"
        f"print(TorchvisionEmbedder({SMALL!r}, preprocess=Preprocess(64, 64), weights=None, seed=0).version)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert out.stdout.strip() == small.version


def test_head_must_match_backbone_dim():
    with pytest.raises(ValueError, match="576"):
        TorchvisionEmbedder(SMALL, projection=ProjectionHead(1280, 16), preprocess=TINY, weights=None)


def test_checkpoint_round_trip_reproduces_vectors_and_version(tmp_path):
    # given an embedder with a trained-looking head and a fine-tuned backbone
    torch.manual_seed(7)
    head = ProjectionHead(576, 24, hidden_dim=48)
    original = TorchvisionEmbedder(SMALL, projection=head, preprocess=TINY, weights=None, seed=3)
    path = save_checkpoint(
        tmp_path / "ckpt" / "emb.pt",
        arch=SMALL,
        preprocess=TINY,
        head=head,
        backbone_state=original.net.backbone.state_dict(),
        args=Namespace(lr=0.01, steps=600, out=Path("/x")),
        metrics={"recall@1": 0.8},
    )
    # when it is loaded back (no weight files needed: the backbone state is inside)
    ckpt = load_checkpoint(path)
    loaded = make_embedder(str(path))
    # then the format carries its args and reproduces the same model
    assert ckpt["args"] == {"lr": 0.01, "steps": 600, "out": "/x"} and ckpt["metrics"] == {"recall@1": 0.8}
    assert ckpt["head_args"] == {"in_dim": 576, "out_dim": 24, "hidden_dim": 48}
    assert loaded.version == original.version and loaded.dim == 24
    images = _random_images(3, seed=5)
    np.testing.assert_allclose(loaded.embed(images), original.embed(images), atol=1e-5)


def test_load_checkpoint_rejects_other_files(tmp_path):
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a"):
        load_checkpoint(tmp_path / "other.pt")


def test_missing_weights_raise_without_downloading(tmp_path, monkeypatch):
    monkeypatch.setattr(embed, "checkpoint_dir", lambda: tmp_path)
    with pytest.raises(WeightsUnavailable, match="resnet50"):
        TorchvisionEmbedder("resnet50")
    with pytest.raises(WeightsUnavailable):
        make_embedder(str(tmp_path / "nope.pt"))


def test_make_embedder_names():
    assert isinstance(make_embedder("pixels"), PixelEmbedder) and make_embedder("pixels:16").dim == 768
    with pytest.raises(ValueError, match="unknown"):
        make_embedder("no_such_net")


# --------------------------------------------------------------------------- real weights


def _real_mobilenet() -> TorchvisionEmbedder:
    try:
        return TorchvisionEmbedder("mobilenet_v2")
    except WeightsUnavailable as exc:
        pytest.skip(str(exc))


@pytest.mark.weights
def test_mobilenet_v2_pretrained_version_and_dim():
    e = _real_mobilenet()
    assert e.dim == 1280 and e.weights_name == "IMAGENET1K_V1"
    assert e.version == TorchvisionEmbedder("mobilenet_v2").version


@pytest.mark.weights
def test_pretrained_features_match_altered_catalog_photos():
    # given the catalog photos of a handful of products
    if not SHARED.is_dir():
        pytest.skip("shared dataset not present")
    e = _real_mobilenet()
    keys = sorted(p.name for p in (SHARED / "catalog").iterdir())[::10][:8]
    photos = [Image.open(next((SHARED / "catalog" / k).iterdir())).convert("RGB") for k in keys]
    gallery = e.embed(photos)
    # when each is queried with a mirrored, cropped, darker copy
    altered = [
        p.transpose(Image.Transpose.FLIP_LEFT_RIGHT).crop((15, 10, 190, 185)).point(lambda v: int(v * 0.8))
        for p in photos
    ]
    scores = e.embed(altered) @ gallery.T
    # then every copy's nearest catalog photo is its own product
    assert (scores.argmax(axis=1) == np.arange(len(keys))).all()


@pytest.mark.weights
def test_mobilenet_v2_compiled_folds_batchnorm_and_matches_eager():
    e = _real_mobilenet()
    graph = str(e.inference_net.graph)
    assert "batch_norm" not in graph and "mkldnn_convolution" in graph
    x = torch.randn(3, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        drift = (e.inference_net(x) - e.net(x)).abs().max().item()
    assert drift < embed.INFERENCE_TOLERANCE
