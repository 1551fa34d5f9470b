"""schemathesis: requests generated from the OpenAPI schema find no server error."""

import json

import pytest
import schemathesis
from django.core.cache import cache
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance


class App:
    """Django's WSGI handler, built at the first request: its middleware then reads the
    test settings (plain HTTP) rather than the import-time ones."""

    handler = None

    def __call__(self, environ, start_response):
        from django.core.signals import request_finished, request_started
        from django.db import close_old_connections

        if self.handler is None:
            from django.core.handlers.wsgi import WSGIHandler

            self.handler = WSGIHandler()
        # As django.test.Client does: closing "old" connections at the end of a request
        # would close the test's own transaction on PostgreSQL.
        request_started.disconnect(close_old_connections)
        request_finished.disconnect(close_old_connections)
        try:
            return list(self.handler(environ, start_response))
        finally:
            request_started.connect(close_old_connections)
            request_finished.connect(close_old_connections)


def _openapi() -> dict:
    from drf_spectacular.generators import SchemaGenerator

    return json.loads(json.dumps(SchemaGenerator().get_schema(request=None, public=True), default=str))


schema = schemathesis.openapi.from_dict(_openapi())
schema.app = App()


@pytest.fixture(scope="module")
def partner_token(django_db_setup, django_db_blocker, _fuzz_settings):
    from rest_framework.authtoken.models import Token

    from catalog.services import product_image_add
    from tests.factories import MerchantFactory, ProductFactory, UserFactory, image_bytes

    with django_db_blocker.unblock():
        shop = MerchantFactory(name="Fuzz Shop", slug="fuzz-shop")
        user = UserFactory(username="fuzz-partner")
        shop.staff.add(user)
        product = ProductFactory(merchant=shop, sku="FUZZ-1")
        product_image_add(product=product, source=image_bytes(seed=1))
        token = Token.objects.create(user=user).key
    yield token
    with django_db_blocker.unblock():
        from catalog.models import Merchant, Product

        Product.objects.filter(merchant=shop).delete()
        Merchant.objects.filter(pk=shop.pk).delete()
        user.delete()


@pytest.fixture(scope="module")
def _fuzz_settings(tmp_path_factory):
    """Module-wide settings (the per-test `settings` fixture cannot reach module fixtures)."""
    from django.conf import settings as dj

    names = ["VISUALSHOP_EMBEDDER", "SEARCH_DETECTOR", "SEARCH_AUTO_INDEX", "MEDIA_ROOT"]
    saved = {name: getattr(dj, name) for name in names}
    values = ["pixels", "none", False, tmp_path_factory.mktemp("fuzz-media")]
    for name, value in zip(names, values):
        setattr(dj, name, value)
    yield
    for name, value in saved.items():
        setattr(dj, name, value)


@pytest.mark.slow
@pytest.mark.django_db(transaction=False)
@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_has_no_server_errors(case, partner_token):
    cache.clear()  # throttling is tested elsewhere; here every request gets through
    if case.path.startswith("/api/v1/partner/"):
        case.headers = {**(case.headers or {}), "Authorization": f"Token {partner_token}"}
    case.call_and_validate(checks=[not_a_server_error, status_code_conformance, response_schema_conformance])
