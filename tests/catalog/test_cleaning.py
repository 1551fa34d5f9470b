import random

import pytest
from django.urls import reverse

from catalog.cleaning import CleaningPolicy, review_image_decide, spot_check_agreement_by_week
from catalog.models import ReviewImage
from tests.factories import ReviewImageFactory, UserFactory

pytestmark = pytest.mark.django_db
POLICY = CleaningPolicy(accept_at=0.8, reject_below=0.6, spot_check_fraction=0.0)


@pytest.mark.parametrize(
    "score,status",
    [
        (0.95, "accepted"),
        (0.8, "accepted"),
        (0.7, "needs_review"),
        (0.6, "needs_review"),
        (0.59, "rejected"),
        (None, "needs_review"),
    ],
)
def test_thresholds_decide(score, status):
    review = review_image_decide(review=ReviewImageFactory(), score=score, policy=POLICY)
    assert review.status == status and review.auto_status == status


def test_a_staff_label_is_not_overridden_by_a_new_score():
    review = ReviewImageFactory(staff_label="rejected", status="rejected")
    review_image_decide(review=review, score=0.99, policy=POLICY)
    review.refresh_from_db()
    assert review.status == "rejected" and review.auto_status == "accepted"


def test_a_fraction_of_automatic_decisions_is_sampled():
    policy = CleaningPolicy(accept_at=0.8, reject_below=0.6, spot_check_fraction=0.25)
    rng = random.Random(1)
    reviews = [
        review_image_decide(review=ReviewImageFactory(), score=s, policy=policy, rng=rng)
        for s in [0.9] * 40 + [0.1] * 40 + [0.7] * 20
    ]
    sampled = [r for r in reviews if r.spot_check]
    assert 8 <= len(sampled) <= 35
    assert {r.status for r in sampled} == {"accepted", "rejected"}  # never the ones staff see anyway


@pytest.fixture
def sampled(admin_user):
    accepted = ReviewImageFactory()
    review_image_decide(review=accepted, score=0.9, policy=POLICY)
    rejected = ReviewImageFactory()
    review_image_decide(review=rejected, score=0.1, policy=POLICY)
    ReviewImage.objects.update(spot_check=True)
    return accepted, rejected


def test_spot_check_page_shows_the_photo_beside_the_product(admin_client, sampled):
    page = admin_client.get(reverse("admin:catalog_reviewimage_spot_check"))
    assert page.status_code == 200
    assert b"2 sampled decisions to check" in page.content
    assert b'value="right"' in page.content and b'value="wrong"' in page.content


def test_right_and_wrong_verdicts(admin_client, admin_user, sampled):
    accepted, rejected = sampled
    url = lambda r: reverse("admin:catalog_reviewimage_spot_check_answer", args=[r.pk])  # noqa: E731
    assert admin_client.post(url(accepted), {"verdict": "right"}).status_code == 302
    assert admin_client.post(url(rejected), {"verdict": "wrong"}).status_code == 302
    accepted.refresh_from_db()
    rejected.refresh_from_db()
    assert accepted.status == "accepted" and accepted.spot_check_agrees is True
    assert rejected.status == "accepted" and rejected.staff_label == "accepted"  # staff overrode it
    assert rejected.spot_check_agrees is False and rejected.labeled_by == admin_user
    [week] = spot_check_agreement_by_week()
    assert (week["checked"], week["agreed"], week["rate"]) == (2, 1, 0.5)
    page = admin_client.get(reverse("admin:catalog_reviewimage_changelist"))
    assert b"50%" in page.content


def test_merchant_staff_cannot_answer_for_another_merchant(client, sampled):
    staff = UserFactory(is_staff=True, is_superuser=False)
    from django.contrib.auth.models import Permission

    staff.user_permissions.set(Permission.objects.filter(content_type__app_label="catalog"))
    client.force_login(staff)
    response = client.post(
        reverse("admin:catalog_reviewimage_spot_check_answer", args=[sampled[0].pk]), {"verdict": "wrong"}
    )
    assert response.status_code == 404
    sampled[0].refresh_from_db()
    assert sampled[0].spot_check_agrees is None
