import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from catalog.models import Product
from tests.factories import image_bytes

pytestmark = pytest.mark.django_db


def _tiny_catalog(root):
    (root / "catalog" / "pear").mkdir(parents=True)
    (root / "catalog" / "pear" / "a.jpg").write_bytes(image_bytes(seed=9))
    return root


def test_demo_setup_imports_and_prints_working_logins(settings, tmp_path, client, capsys):
    settings.DEBUG = True
    call_command("demo_setup", "--catalog", str(_tiny_catalog(tmp_path)))
    out = capsys.readouterr().out
    assert "demo / visualshop-demo" in out
    assert Product.objects.filter(merchant__name="Demo Grocer").count() == 1
    # the printed login works and sees the demo merchant's products
    assert client.login(username="demo", password="visualshop-demo")
    assert b"pear" in client.get(reverse("admin:catalog_product_changelist")).content


def test_demo_setup_refuses_outside_debug(settings, tmp_path):
    settings.DEBUG = False
    with pytest.raises(CommandError, match="DJANGO_DEBUG"):
        call_command("demo_setup", "--catalog", str(_tiny_catalog(tmp_path)))
