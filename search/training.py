"""The embedder's learning loop: train a new version from the catalog and the logs,
embed everything into it, evaluate it on held-out photos, and switch to it (or back).

    train (vision.train) -> register the version -> embed every image into it
    -> evaluate against the active version on the held-out review photos (and the
       held-out logged searches, once there are enough)
    -> activate: rebuild its index, re-calibrate review cleaning, switch

Every step is idempotent and resumable: vectors already stored for a version are not
computed again, so a worker killed halfway through a rollout loses only its last batch.
The previous version keeps its vectors and index for rollback (:func:`embedder_activate`).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path

import numpy as np
from django.conf import settings
from django.db import transaction
from django.db.models import Count, Q

from catalog.models import ProductImage, ReviewImage
from search import embedding
from search.models import REVIEW_ID_OFFSET, EmbedderVersion, ImageVector, SearchQuery, faiss_id
from vision.imageio import ImageError, decode_image
from vision.train import TrainConfig
from vision.train_data import HardNegatives, Photo, is_held_out, recall_at

logger = logging.getLogger(__name__)
Progress = Callable[[str, int, int], None]

# Photos per product drawn for one training run: bounds memory on large catalogs (each photo
# is kept decoded at a short side of 256 px, ~260 KB, or as TrainConfig.views cached crops).
MAX_PHOTOS_PER_PRODUCT = 60
# A new version goes live only if its held-out recall@1 is at least the active one's,
# in each mode, less this tolerance (a few held-out photos' worth of noise).
GATE_TOLERANCE = 0.005
# Held-out logged searches join the comparison once both versions were measured on this many.
MIN_HELD_OUT_SEARCHES = 50
BACKFILL_BATCH = 64


class RolloutError(RuntimeError):
    pass


def checkpoint_dir() -> Path:
    """Trained versions live beside the indexes: web processes and workers share MEDIA_ROOT."""
    return Path(settings.MEDIA_ROOT) / "embedders"


# --------------------------------------------------------------------------- training data


def clicked_searches() -> Iterator[tuple[SearchQuery, int, tuple[int, ...]]]:
    """Logged searches with a photo and exactly one clicked product: (query, the clicked
    product, the products shown above it and skipped)."""
    clicked = (
        SearchQuery.objects.exclude(photo="")
        .annotate(n_clicked=Count("impressions__clicks__impression", distinct=True))
        .filter(n_clicked=1)
    )
    for query in clicked.prefetch_related("impressions__clicks"):
        shown = sorted(query.impressions.all(), key=lambda i: i.position)
        hit = next(i for i in shown if i.clicks.all())
        yield query, hit.product_id, tuple(i.product_id for i in shown if i.position < hit.position)


def search_held_out(query: SearchQuery) -> bool:
    """A tenth of the logged searches (by their photo) stay out of training: new shoppers'
    photos, the closest thing to what a new version will be searched with."""
    return bool(query.photo_sha256) and is_held_out(query.photo_sha256)


def training_photos(*, seed: int = 0) -> tuple[list[Photo], list[HardNegatives]]:
    """What the embedder learns from, never a held-out photo.

    - active products' images;
    - accepted review photos, as positives of their product;
    - logged query photos with exactly one clicked product, labelled with it; the products
      shown above the click and skipped are its hard negatives.
    """
    rng = np.random.default_rng(seed)
    photos: list[Photo] = []
    for image in ProductImage.objects.filter(product__is_active=True).only("file", "product_id"):
        photos.append(Photo(image.file.path, image.product_id, "catalog"))
    reviews: dict[int, list[Photo]] = defaultdict(list)
    accepted = ReviewImage.objects.filter(product__is_active=True, status=ReviewImage.Status.ACCEPTED)
    for review in accepted.only("file", "product_id", "sha256"):
        if not is_held_out(review.sha256):
            reviews[review.product_id].append(Photo(review.file.path, review.product_id, "review"))
    for _, rows in sorted(reviews.items()):
        if len(rows) > MAX_PHOTOS_PER_PRODUCT:
            rows = [rows[i] for i in sorted(rng.choice(len(rows), MAX_PHOTOS_PER_PRODUCT, replace=False))]
        photos.extend(rows)
    hard: list[HardNegatives] = []
    for query, clicked, skipped in clicked_searches():
        if search_held_out(query):
            continue
        photos.append(Photo(query.photo.path, clicked, "query"))
        if skipped:
            hard.append(HardNegatives(clicked, skipped))
    return photos, hard


def _searched_region(query: SearchQuery):
    """The part of the logged photo that the search embedded: its chosen box (in uploaded
    pixels; the logged photo may be smaller), padded as the pipeline pads automatic boxes."""
    from search.pipeline import search_config
    from vision.detect import Box
    from vision.pipeline import crop

    with query.photo.open("rb") as f:
        image, _ = decode_image(f.read())
    box = query.chosen_box or {}
    if not box or not query.width:
        return image
    chosen = Box(box["x1"], box["y1"], box["x2"], box["y2"], box.get("score", 1.0), box["label"])
    s = image.width / query.width
    return crop(image, chosen.scaled(s, s), search_config().pad_for(query.box_from_user))


# --------------------------------------------------------------------------- versions


def embedder_train(*, config: TrainConfig | None = None, progress: Progress | None = None) -> EmbedderVersion:
    """Train a new version and register it (inactive). Its checkpoint carries the
    training arguments and timings; nothing is embedded yet."""
    import torch

    from vision.train import train

    torch.set_num_threads(settings.TORCH_THREADS)
    config = config or TrainConfig()
    photos, hard = training_photos(seed=config.seed)
    if len({p.label for p in photos}) < 2:
        raise RolloutError("training needs photos of at least two active products")
    logger.info("training an embedder on %d photos, %d hard-negative groups", len(photos), len(hard))
    result = train(photos, hard, config, progress=progress)
    version = result.embedder.version
    path = result.save(checkpoint_dir() / f"{version}.pt")
    kinds = {k: sum(p.kind == k for p in photos) for k in ("catalog", "review", "query")}
    metrics = {
        "training": {
            **result.timings,
            "photos": kinds,
            "hard_negative_groups": len(hard),
            "skipped": len(result.skipped),
        },
        "args": asdict(config),
        "loss_history": result.loss_history,
    }
    row, _ = EmbedderVersion.objects.update_or_create(
        version=version, defaults={"name": str(path), "dim": result.embedder.dim, "metrics": metrics}
    )
    return row


def embedder_backfill(*, embedder: EmbedderVersion, progress: Progress | None = None) -> int:
    """Embed every product image and review photo that has no vector of this version."""
    done = 0
    for kind, model, embed in (
        ("product", ProductImage, embedding.product_images_embed),
        ("review", ReviewImage, embedding.review_images_embed),
    ):
        missing = list(model.objects.exclude(vectors__embedder=embedder).order_by("pk").values_list("pk", flat=True))
        for start in range(0, len(missing), BACKFILL_BATCH):
            done += embed(image_ids=missing[start : start + BACKFILL_BATCH], embedder=embedder)
            if progress:
                progress(f"embed {kind}", min(start + BACKFILL_BATCH, len(missing)), len(missing))
    return done


def backfill_missing(*, embedder: EmbedderVersion) -> int:
    """Images that still lack a vector of this version (product images and reviews)."""
    return sum(model.objects.exclude(vectors__embedder=embedder).count() for model in (ProductImage, ReviewImage))


def _vectors(embedder: EmbedderVersion) -> dict[int, tuple[int, np.ndarray]]:
    rows = ImageVector.objects.filter(embedder=embedder, product__is_active=True).values_list(
        "product_image_id", "review_image_id", "product_id", "vector"
    )
    return {faiss_id(p, r): (pid, np.frombuffer(bytes(v), np.float32)) for p, r, pid, v in rows}


def embedder_evaluate(*, embedder: EmbedderVersion) -> dict:
    """Recall on the held-out review photos (accepted ones: their label is trusted), with
    the other accepted reviews in the gallery and with the product images only; and on the
    held-out logged searches (the region each one searched with, labelled by its one
    click), against everything the index holds. Stored in the version's metrics["held_out"]."""
    vectors = _vectors(embedder)
    reviews = ReviewImage.objects.filter(product__is_active=True, status=ReviewImage.Status.ACCEPTED)
    held, kept = [], []
    for pk, sha in reviews.values_list("pk", "sha256"):
        (held if is_held_out(sha) else kept).append(faiss_id(None, pk))
    catalog = [fid for fid in vectors if fid < REVIEW_ID_OFFSET]
    missing = [fid for fid in held + kept + catalog if fid not in vectors]
    if missing:
        raise RolloutError(f"{len(missing)} images have no vector of {embedder.version} yet: embed them first")

    def stack(ids):
        if not ids:
            return np.zeros((0, embedder.dim), np.float32), []
        return np.stack([vectors[i][1] for i in ids]), [vectors[i][0] for i in ids]

    q, ql = stack(held)
    cat, catl = stack(catalog)
    gal, gall = stack(catalog + kept)
    result = {"with_reviews": recall_at(q, ql, gal, gall), "catalog_only": recall_at(q, ql, cat, catl)}
    regions, clicks = [], []
    for query, clicked, _ in clicked_searches():
        if search_held_out(query):
            try:
                regions.append(_searched_region(query))
            except (OSError, ImageError):  # its photo purged meanwhile, or unreadable
                continue
            clicks.append(clicked)
    if regions:
        sq = embedding.embedder_load(embedder.name).embed(regions)
        index, indexl = stack(catalog + kept + held)
        result["searches"] = recall_at(sq, clicks, index, indexl)
    metrics = {**embedder.metrics, "held_out": result}
    EmbedderVersion.objects.filter(pk=embedder.pk).update(metrics=metrics)
    embedder.metrics = metrics
    return result


def gate(*, candidate: dict, active: dict | None) -> tuple[bool, str]:
    """Whether a version evaluated as ``candidate`` may replace one evaluated as ``active``."""
    if active is None:
        return True, "nothing active to compare with"
    if not candidate["catalog_only"]["queries"]:
        return False, "no held-out photos to compare on: switch by hand (activate_embedder VERSION)"
    modes = ["with_reviews", "catalog_only"]
    if min(r.get("searches", {}).get("queries", 0) for r in (candidate, active)) >= MIN_HELD_OUT_SEARCHES:
        modes.append("searches")
    worse = [
        f"{mode} recall@1 {candidate[mode]['recall@1']:.3f} < {active[mode]['recall@1']:.3f}"
        for mode in modes
        if candidate[mode]["recall@1"] < active[mode]["recall@1"] - GATE_TOLERANCE
    ]
    return (not worse, "; ".join(worse) or "at least as good as the active version on the held-out photos")


# --------------------------------------------------------------------------- review cleaning


def cleaning_thresholds(*, embedder: EmbedderVersion, reference: EmbedderVersion) -> dict[str, float]:
    """Review-cleaning thresholds for ``embedder`` that keep ``reference``'s decisions.

    Scores of one photo differ between versions, so a threshold is carried over by rank:
    the new threshold cuts the new scores of the scored review photos at the same quantile
    as the old threshold cuts their old scores.
    """
    policy = embedding.cleaning_policy(embedder=reference)
    old_accept, old_reject = policy.accept_at, policy.reject_below
    old, new = [], []
    views = embedding.product_views(
        embedder=embedder, product_ids=list(ReviewImage.objects.values_list("product_id", flat=True).distinct())
    )
    rows = ImageVector.objects.filter(embedder=embedder, review_image__score__isnull=False).values_list(
        "review_image_id", "product_id", "vector", "review_image__score"
    )
    for review_id, product_id, vector, old_score in rows:
        score = embedding.review_score(
            vector=np.frombuffer(bytes(vector), np.float32), review_id=review_id, views=views.get(product_id)
        )
        if score is not None:
            old.append(old_score)
            new.append(score)
    if len(old) < 20:
        return {"accept_at": old_accept, "reject_below": old_reject, "scored": len(old)}
    old_a, new_a = np.asarray(old), np.asarray(new)
    return {
        "accept_at": round(float(np.quantile(new_a, np.mean(old_a < old_accept))), 4),
        "reject_below": round(float(np.quantile(new_a, np.mean(old_a < old_reject))), 4),
        "scored": len(old),
    }


# --------------------------------------------------------------------------- rollout


def embedder_activate(*, embedder: EmbedderVersion, progress: Progress | None = None) -> EmbedderVersion:
    """Make ``embedder`` the version that serves search: embed what it lacks, build its
    index, carry the review-cleaning thresholds over, then switch in one transaction.

    Also the rollback: the previous version keeps its vectors and index, and activating it
    again only embeds the images added since.
    """
    from search.indexing import index_rebuild
    from search.live import live_index_reset

    previous = EmbedderVersion.objects.filter(is_active=True).first()
    if previous is not None and previous.pk == embedder.pk:
        return embedder
    embedder_backfill(embedder=embedder, progress=progress)
    if left := backfill_missing(embedder=embedder):
        raise RolloutError(f"{left} images still have no vector of {embedder.version}: not switching")
    if previous is not None and "cleaning" not in embedder.metrics:
        metrics = {**embedder.metrics, "cleaning": cleaning_thresholds(embedder=embedder, reference=previous)}
        EmbedderVersion.objects.filter(pk=embedder.pk).update(metrics=metrics)
    index_rebuild(embedder=embedder)
    with transaction.atomic():
        list(EmbedderVersion.objects.select_for_update().filter(Q(is_active=True) | Q(pk=embedder.pk)))
        EmbedderVersion.objects.filter(is_active=True).update(is_active=False)
        EmbedderVersion.objects.filter(pk=embedder.pk).update(is_active=True)
    # Images saved during the switch were embedded by the old version only: the dirty
    # flags belong to the active version, so mark what the new one lacks.
    for model in (ProductImage, ReviewImage):
        model.objects.exclude(vectors__embedder=embedder).update(needs_embedding=True)
    live_index_reset()
    embedder.refresh_from_db()
    logger.info("active embedder: %s (was %s)", embedder.version, previous.version if previous else None)
    return embedder


def embedder_learn(
    *, config: TrainConfig | None = None, activate: bool = True, progress: Progress | None = None
) -> dict:
    """The scheduled loop: train, embed everything, evaluate both versions on the same
    held-out photos, and switch when the new one is at least as good."""
    active = embedding.embedder_active()
    candidate = embedder_train(config=config, progress=progress)
    embedder_backfill(embedder=candidate, progress=progress)
    embedder_backfill(embedder=active, progress=progress)
    new, old = embedder_evaluate(embedder=candidate), embedder_evaluate(embedder=active)
    ok, why = gate(candidate=new, active=old)
    if ok and activate:
        embedder_activate(embedder=candidate, progress=progress)
    return {
        "version": candidate.version,
        "held_out": new,
        "active_held_out": old,
        "passed": ok,
        "why": why,
        "activated": ok and activate,
    }


__all__ = [
    "GATE_TOLERANCE",
    "RolloutError",
    "backfill_missing",
    "checkpoint_dir",
    "cleaning_thresholds",
    "embedder_activate",
    "embedder_backfill",
    "embedder_evaluate",
    "embedder_learn",
    "embedder_train",
    "gate",
    "training_photos",
]
