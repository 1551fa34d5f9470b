"""Review-photo cleaning: the decision from a score, staff spot checks, agreement rate.

The score is the photo's best cosine similarity to its product's images (computed by the
search app, which owns the vectors). Two thresholds split it into accepted, needs_review
and rejected; a fraction of the automatic decisions is sampled for staff to check.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Count, Q
from django.db.models.functions import TruncWeek
from django.utils import timezone

from catalog.models import ReviewImage

Status = ReviewImage.Status


@dataclass(frozen=True)
class CleaningPolicy:
    accept_at: float  # score >= accept_at: accepted
    reject_below: float  # score < reject_below: rejected; in between: needs_review
    spot_check_fraction: float

    @classmethod
    def from_settings(cls) -> CleaningPolicy:
        return cls(
            accept_at=settings.REVIEW_ACCEPT_SCORE,
            reject_below=settings.REVIEW_REJECT_SCORE,
            spot_check_fraction=settings.REVIEW_SPOT_CHECK_FRACTION,
        )

    def decide(self, score: float | None) -> str:
        if score is None:  # nothing to compare with: staff decide
            return Status.NEEDS_REVIEW
        if score >= self.accept_at:
            return Status.ACCEPTED
        if score < self.reject_below:
            return Status.REJECTED
        return Status.NEEDS_REVIEW


def review_image_decide(
    *, review: ReviewImage, score: float | None, policy: CleaningPolicy | None = None, rng: random.Random | None = None
) -> ReviewImage:
    """Record the automatic score and decision. A staff label always wins."""
    policy = policy or CleaningPolicy.from_settings()
    decision = policy.decide(score)
    review.score = score
    review.auto_status = decision
    review.auto_decided_at = timezone.now()
    fields = ["score", "auto_status", "auto_decided_at"]
    if not review.staff_label:
        review.status = decision
        fields.append("status")
        if decision != Status.NEEDS_REVIEW and (rng or random).random() < policy.spot_check_fraction:
            review.spot_check = True
            fields.append("spot_check")
    review.save(update_fields=fields)
    return review


def review_image_spot_check(*, review: ReviewImage, agrees: bool, user: AbstractBaseUser) -> ReviewImage:
    """Staff verdict on a sampled automatic decision; "wrong" flips the decision."""
    review.spot_check_agrees = agrees
    decided = review.auto_status or review.status
    label = decided if agrees else (Status.REJECTED if decided == Status.ACCEPTED else Status.ACCEPTED)
    review.staff_label = label
    review.status = label
    review.labeled_by = user
    review.labeled_at = timezone.now()
    review.save(update_fields=["spot_check_agrees", "staff_label", "status", "labeled_by", "labeled_at"])
    return review


def spot_check_agreement_by_week(*, weeks: int = 12) -> list[dict]:
    """[{week, checked, agreed, rate}] for the last ``weeks`` weeks, newest first."""
    since = timezone.now() - timedelta(weeks=weeks)
    rows = (
        ReviewImage.objects.filter(spot_check=True, spot_check_agrees__isnull=False, labeled_at__gte=since)
        .annotate(week=TruncWeek("labeled_at"))
        .values("week")
        .annotate(checked=Count("pk"), agreed=Count("pk", filter=Q(spot_check_agrees=True)))
        .order_by("-week")
    )
    return [{**r, "rate": r["agreed"] / r["checked"]} for r in rows]
