"""The embedder's learning loop on the platform: training data, gate, rollout and rollback."""

import io
from pathlib import Path

import numpy as np
import pytest
from django.core.files.base import ContentFile
from django.core.management import CommandError, call_command
from PIL import Image

from catalog.models import ProductImage, ReviewImage
from catalog.services import product_image_add, review_image_add
from search import training
from search.embedding import embedder_active
from search.indexing import index_path
from search.models import Click, EmbedderVersion, ImageVector, Impression, SearchQuery
from search.pipeline import search_pipeline
from tests.factories import ProductFactory
from vision.embed import make_embedder
from vision.train_data import is_held_out

pytestmark = pytest.mark.django_db(transaction=True)


def photo(label: int, seed: int) -> bytes:
    """Product `label`: its own colour and stripes, seen with noise."""
    rng = np.random.default_rng(seed)
    base = np.array([(label * 80) % 256, (label * 150 + 60) % 256, (label * 40 + 120) % 256], np.float32)
    stripes = 60 * np.sin(np.arange(96)[None, :, None] * (0.2 + 0.25 * label))
    pixels = np.clip(base + stripes + rng.normal(0, 25, (96, 96, 3)), 0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "PNG")
    return out.getvalue()


@pytest.fixture
def shop(pixel_engine):
    """Four products with an image and six review photos each, all embedded and decided."""
    products = [ProductFactory(sku=f"P{i}") for i in range(4)]
    for i, product in enumerate(products):
        product_image_add(product=product, source=photo(i, 1000 + i))
        for j in range(6):
            review_image_add(product=product, source=photo(i, 100 * i + j))
    ReviewImage.objects.update(status=ReviewImage.Status.ACCEPTED)
    return products


def pixels_version(size: int) -> EmbedderVersion:
    embedder = make_embedder(f"pixels:{size}")
    return EmbedderVersion.objects.create(version=embedder.version, name=f"pixels:{size}", dim=embedder.dim)


def test_training_photos_are_catalog_accepted_reviews_and_clicked_queries(shop, tmp_path):
    first = shop[0]
    rejected = ReviewImage.objects.filter(product=first).first()
    rejected.status = ReviewImage.Status.REJECTED
    rejected.save()
    inactive = shop[3]
    inactive.is_active = False
    inactive.save()
    # a logged search: shown P2 (1st), P1 (2nd), P0 (3rd); the shopper clicked P1
    query = SearchQuery.objects.create(
        channel="web", width=96, height=96, k=3, embedder_version="x", index_generation=1
    )
    query.photo.save("q.jpg", ContentFile(photo(1, 4242)))
    shown = [
        Impression.objects.create(query=query, product=p, position=i + 1, score=0.5)
        for i, p in enumerate([shop[2], shop[1], shop[0]])
    ]
    Click.objects.create(impression=shown[1])
    # and one search with no click: not a training example
    SearchQuery.objects.create(channel="web", width=9, height=9, k=3, embedder_version="x", index_generation=1)

    photos, hard = training.training_photos()

    by_kind = {k: [p for p in photos if p.kind == k] for k in ("catalog", "review", "query")}
    assert sorted(p.label for p in by_kind["catalog"]) == sorted(p.pk for p in shop[:3])
    expected_reviews = [
        r for r in ReviewImage.objects.filter(status="accepted", product__is_active=True) if not is_held_out(r.sha256)
    ]
    assert sorted(p.source for p in by_kind["review"]) == sorted(r.file.path for r in expected_reviews)
    assert rejected.file.path not in {p.source for p in photos}
    assert [(p.label, p.source) for p in by_kind["query"]] == [(shop[1].pk, query.photo.path)]
    # the product shown above the click and skipped is its hard negative
    assert [(h.positive, h.negatives) for h in hard] == [(shop[1].pk, (shop[2].pk,))]


HELD_OUT_SHA = "0" * 64  # is_held_out: the first 8 hex digits are 0 modulo 10
KEPT_SHA = "1" * 64


def logged_search(source: bytes, clicked, *, sha: str, width: int = 96, box: dict | None = None, by_user=False):
    """A logged search whose shopper clicked ``clicked`` (shown first)."""
    query = SearchQuery.objects.create(
        channel="web", width=width, height=width, k=3, embedder_version="x", index_generation=1, photo_sha256=sha,
        chosen_box=box or {"x1": 0, "y1": 0, "x2": width, "y2": width, "score": 1.0, "label": "image"},
        box_from_user=by_user,
    )  # fmt: skip
    query.photo.save("q.jpg", ContentFile(source))
    Click.objects.create(impression=Impression.objects.create(query=query, product=clicked, position=1, score=0.5))
    return query


def test_held_out_searches_stay_out_of_training_and_are_evaluated(shop):
    assert is_held_out(HELD_OUT_SHA) and not is_held_out(KEPT_SHA)
    kept = logged_search(photo(1, 4001), shop[1], sha=KEPT_SHA)
    held = [
        logged_search(photo(2, 4002), shop[2], sha=HELD_OUT_SHA),
        logged_search(photo(3, 4003), shop[0], sha=HELD_OUT_SHA),  # a photo of P3, clicked P0
    ]
    purged = logged_search(photo(1, 4004), shop[1], sha=HELD_OUT_SHA)
    Path(purged.photo.path).unlink()  # its file deleted by the retention task, the row not yet updated
    photos, _ = training.training_photos()
    sources = {p.source for p in photos if p.kind == "query"}
    assert sources == {kept.photo.path} and not sources & {q.photo.path for q in held}

    new = pixels_version(16)
    training.embedder_backfill(embedder=new)
    result = training.embedder_evaluate(embedder=new)
    # each held-out search is labelled by its click: P2 is found, "P0" is not; the
    # search whose photo is gone is left out
    assert result["searches"]["queries"] == 2 and result["searches"]["recall@1"] == 0.5


def test_the_searched_region_is_the_chosen_box_scaled_to_the_logged_photo(shop):
    # uploaded at 192 x 192, logged at 96 x 96: the shopper's box on the right half
    query = logged_search(
        photo(0, 5), shop[0], sha=KEPT_SHA, width=192,
        box={"x1": 96, "y1": 0, "x2": 192, "y2": 192, "score": 1.0, "label": "box"}, by_user=True,
    )  # fmt: skip
    region = training._searched_region(query)
    assert region.size == (48, 96)
    with Image.open(query.photo.path) as logged:
        assert np.array_equal(np.asarray(region), np.asarray(logged.convert("RGB"))[:, 48:])


def test_held_out_reviews_never_reach_training(shop):
    # make every review held out by content: none may be used for training
    held = [r for r in ReviewImage.objects.all() if is_held_out(r.sha256)]
    photos, _ = training.training_photos()
    assert not {r.file.path for r in held} & {p.source for p in photos}


def test_gate_compares_both_modes_against_the_active_version():
    def result(wr, co, n=50):
        return {"with_reviews": {"recall@1": wr, "queries": n}, "catalog_only": {"recall@1": co, "queries": n}}

    assert training.gate(candidate=result(0.9, 0.8), active=result(0.9, 0.7))[0]
    assert training.gate(candidate=result(0.9, 0.8), active=None)[0]
    ok, why = training.gate(candidate=result(0.95, 0.6), active=result(0.9, 0.7))
    assert not ok and "catalog_only" in why
    ok, why = training.gate(candidate=result(0.9, 0.8, n=0), active=result(0.9, 0.7, n=0))
    assert not ok and "no held-out" in why

    # held-out searches count once both versions were measured on enough of them
    def with_searches(r, n):
        return {**result(0.9, 0.8), "searches": {"recall@1": r, "queries": n}}

    n = training.MIN_HELD_OUT_SEARCHES
    ok, why = training.gate(candidate=with_searches(0.5, n), active=with_searches(0.7, n))
    assert not ok and "searches" in why
    assert training.gate(candidate=with_searches(0.5, n - 1), active=with_searches(0.7, n - 1))[0]
    assert training.gate(candidate=with_searches(0.5, n), active=result(0.9, 0.8))[0]


def test_activate_embeds_everything_builds_the_index_and_switches_then_rolls_back(shop):
    old = embedder_active()
    new = pixels_version(16)
    assert training.backfill_missing(embedder=new) == 4 + 24

    training.embedder_activate(embedder=new)

    new.refresh_from_db()
    old.refresh_from_db()
    assert new.is_active and not old.is_active
    assert training.backfill_missing(embedder=new) == 0
    assert index_path(embedder=new).is_file() and new.index_count == 4 + 24
    assert "cleaning" in new.metrics  # thresholds carried over from the old version
    pipeline, live = search_pipeline()
    assert live.embedder.pk == new.pk
    result = pipeline.run(photo(2, 77), k=1)
    assert result.hits[0].product_id == shop[2].pk

    # a review photo added while the new version serves: the old one lacks it
    added, _ = review_image_add(product=shop[0], source=photo(0, 555))
    assert not ImageVector.objects.filter(embedder=old, review_image=added).exists()

    call_command("activate_embedder", old.version)  # roll back

    old.refresh_from_db()
    assert old.is_active and EmbedderVersion.objects.filter(is_active=True).count() == 1
    assert ImageVector.objects.filter(embedder=old, review_image=added).exists()
    _, live = search_pipeline()
    added.refresh_from_db()
    assert live.embedder.pk == old.pk and live.index.ntotal == 4 + 24 + (added.status == "accepted")


def test_activate_refuses_an_unknown_version_and_lists_versions(shop, capsys):
    with pytest.raises(CommandError, match="no embedder version"):
        call_command("activate_embedder", "nope")
    call_command("activate_embedder")
    assert f"* {embedder_active().version}" in capsys.readouterr().out


def test_evaluation_on_held_out_reviews_needs_every_vector(shop):
    new = pixels_version(16)
    with pytest.raises(training.RolloutError, match="no vector"):
        training.embedder_evaluate(embedder=new)
    training.embedder_backfill(embedder=new)
    result = training.embedder_evaluate(embedder=new)
    new.refresh_from_db()
    assert new.metrics["held_out"] == result
    assert result["catalog_only"]["queries"] == sum(is_held_out(r.sha256) for r in ReviewImage.objects.all())


def test_the_learning_task_is_scheduled_monthly_on_the_train_queue(settings):
    entry = settings.CELERY_BEAT_SCHEDULE["embedder-learn"]
    assert entry["task"] == "search.tasks.embedder_learn_task"
    assert entry["schedule"].day_of_month == {1}
    from search.tasks import embedder_learn_task

    assert embedder_learn_task.acks_late is False
    assert settings.CELERY_TASK_ROUTES["search.tasks.embedder_learn_*"]["queue"] == "train"


@pytest.mark.weights
@pytest.mark.slow
def test_train_embedder_trains_embeds_evaluates_and_rolls_out(shop, settings, capsys):
    settings.VISUALSHOP_EMBEDDER = "mobilenet_v2"
    EmbedderVersion.objects.all().delete()
    ImageVector.objects.all().delete()
    active = embedder_active()  # the pretrained MobileNetV2
    training.embedder_backfill(embedder=active)

    call_command(
        "train_embedder", "--steps", "20", "--views", "2", "--classes-per-batch", "4", "--per-class", "3",
        "--head-dim", "32", "--head-warmup-steps", "30", "--activate",
    )  # fmt: skip

    out = capsys.readouterr().out
    trained = EmbedderVersion.objects.exclude(pk=active.pk).get()
    assert Path(trained.name).is_file() and Path(trained.name).parent == training.checkpoint_dir()
    assert trained.metrics["training"]["photos"]["catalog"] == 4
    assert trained.metrics["args"]["steps"] == 20 and trained.metrics["args"]["head_warmup_steps"] == 30
    assert trained.metrics["training"]["head_warmup_loss"] is not None
    assert training.backfill_missing(embedder=trained) == 0
    if "activated" in out.splitlines()[-1]:
        assert EmbedderVersion.objects.get(is_active=True) == trained
    else:
        assert "not rolled out" in out and EmbedderVersion.objects.get(is_active=True) == active
    from search.management.commands.evaluate_search import embedder_name

    assert embedder_name("latest") == trained.name
    assert ProductImage.objects.count() == 4  # nothing of the catalog was touched


def test_cleaning_thresholds_carry_over_by_rank(shop):
    version = embedder_active()
    scores = np.array([s for s in ReviewImage.objects.values_list("score", flat=True) if s is not None])
    carried = training.cleaning_thresholds(embedder=version, reference=version)
    # against itself, the same share of photos is accepted and rejected
    assert carried["scored"] == len(scores) >= 20
    for key, old in (("accept_at", 0.8), ("reject_below", 0.4)):
        assert abs(np.mean(scores < carried[key]) - np.mean(scores < old)) <= 1 / len(scores) + 1e-9


def test_review_photos_are_decided_with_the_active_versions_thresholds(shop):
    version = embedder_active()
    version.metrics = {"cleaning": {"accept_at": -1.0, "reject_below": -2.0}}  # accept anything
    version.save()
    far_off = review_image_add(product=shop[0], source=photo(3, 999))[0]  # looks like product 3
    far_off.refresh_from_db()
    assert far_off.status == ReviewImage.Status.ACCEPTED
    version.metrics = {"cleaning": {"accept_at": 2.0, "reject_below": 1.5}}  # reject anything
    version.save()
    another = review_image_add(product=shop[0], source=photo(0, 31337))[0]
    another.refresh_from_db()
    assert another.status == ReviewImage.Status.REJECTED
