"""The embedder benchmark's stand-in for staff working through the review queue."""

import pytest

from benchmarks.embedder_bench import clear_staff_queue, review_counts
from catalog.models import ReviewImage
from tests.factories import ReviewImageFactory

pytestmark = pytest.mark.django_db

Status = ReviewImage.Status


def test_staff_accept_the_queue_and_leave_automatic_decisions_alone():
    waiting = [ReviewImageFactory(status=Status.NEEDS_REVIEW) for _ in range(2)]
    rejected = ReviewImageFactory(status=Status.REJECTED)
    accepted = ReviewImageFactory(status=Status.ACCEPTED)
    assert review_counts() == {"needs_review": 2, "rejected": 1, "accepted": 1}

    assert clear_staff_queue() == 2

    for review in waiting:
        review.refresh_from_db()
        assert (review.status, review.staff_label) == (Status.ACCEPTED, "accepted")
        assert review.labeled_by.is_staff
    for review, status in ((rejected, Status.REJECTED), (accepted, Status.ACCEPTED)):
        review.refresh_from_db()
        assert (review.status, review.staff_label) == (status, "")
    assert review_counts() == {"accepted": 3, "rejected": 1}
