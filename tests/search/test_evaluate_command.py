import json

import numpy as np
import pytest
from django.core.management import CommandError, call_command
from PIL import Image

from catalog.models import Product
from search.models import EmbedderVersion, ImageVector

pytestmark = pytest.mark.django_db


def folder(tmp_path):
    """Three products; each query is a noisy copy of its product's catalog image."""
    rng = np.random.default_rng(0)
    for key in ("a", "b", "c"):
        base = rng.integers(0, 255, (48, 48, 3))
        for sub, noise in (("catalog", 0), ("queries", 25)):
            (tmp_path / sub / key).mkdir(parents=True)
            pixels = np.clip(base + rng.normal(0, noise or 0.01, base.shape), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).resize((96, 96)).save(tmp_path / sub / key / "1.png")
    return tmp_path


def test_evaluate_search_reports_and_writes_nothing_to_the_platform(tmp_path, capsys):
    out = tmp_path / "out" / "report.json"
    call_command(
        "evaluate_search",
        str(folder(tmp_path / "shop")),
        "--embedder",
        "pixels",
        "--detector",
        "none",
        "--json",
        str(out),
    )
    report = json.loads(out.read_text())
    assert report["recall"]["@1"] == 1.0 and report["n_queries"] == 3
    assert out.with_suffix(".png").exists()
    assert "| R@1 |" in capsys.readouterr().out
    assert not EmbedderVersion.objects.exists() and not ImageVector.objects.exists() and not Product.objects.exists()


def test_latest_needs_a_trained_embedder(tmp_path):
    with pytest.raises(CommandError, match="no trained embedder"):
        call_command("evaluate_search", str(folder(tmp_path / "shop")), "--embedder", "latest")
