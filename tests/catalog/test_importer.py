from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from catalog.importer import catalog_import
from catalog.models import Category, Product, ProductImage, ReviewImage
from tests.factories import image_bytes

pytestmark = pytest.mark.django_db
SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "datasets" / "grocery-store"


@pytest.fixture
def catalog_dir(tmp_path) -> Path:
    """A tiny catalog in the interchange layout, with one broken review photo."""
    root = tmp_path / "shop"
    (root / "catalog" / "red-mug").mkdir(parents=True)
    (root / "catalog" / "blue-cup").mkdir(parents=True)
    (root / "reviews" / "red-mug").mkdir(parents=True)
    (root / "queries" / "red-mug").mkdir(parents=True)
    (root / "catalog" / "red-mug" / "front.jpg").write_bytes(image_bytes(seed=1))
    (root / "catalog" / "red-mug" / "side.png").write_bytes(image_bytes(seed=2, fmt="PNG"))
    (root / "catalog" / "blue-cup" / "a.jpg").write_bytes(image_bytes(seed=3))
    (root / "reviews" / "red-mug" / "r1.jpg").write_bytes(image_bytes(seed=4))
    (root / "reviews" / "red-mug" / "broken.jpg").write_bytes(image_bytes(seed=5)[:300])
    (root / "queries" / "red-mug" / "q.jpg").write_bytes(image_bytes(seed=6))
    (root / "products.csv").write_text(
        'key,title,category,description,price,currency\nred-mug,Red mug,Kitchen/Mugs,"A mug, red",4.50,SEK\n'
    )
    return root


def test_import_reads_the_layout_and_reports_broken_files(catalog_dir):
    report = catalog_import(root=catalog_dir, merchant_name="Shop")
    assert report.products_created == 2
    assert report.images_added == 3 and report.reviews_added == 1
    assert [Path(p).name for p, _ in report.errors] == ["broken.jpg"]
    mug = Product.objects.get(sku="red-mug")
    assert mug.title == "Red mug" and str(mug.price) == "4.50" and mug.currency == "SEK"
    assert mug.category.path == "Kitchen / Mugs"
    assert [img.position for img in mug.images.all()] == [0, 1]
    assert Product.objects.get(sku="blue-cup").title == "blue cup"  # no CSV row: named after its folder
    assert ReviewImage.objects.get().status == ReviewImage.Status.PENDING


def test_second_import_changes_nothing(catalog_dir):
    catalog_import(root=catalog_dir, merchant_name="Shop")
    stamps = dict(Product.objects.values_list("sku", "updated_at"))
    report = catalog_import(root=catalog_dir, merchant_name="Shop")
    assert not report.changed
    assert report.products_unchanged == 2
    assert dict(Product.objects.values_list("sku", "updated_at")) == stamps
    assert ProductImage.objects.count() == 3 and ReviewImage.objects.count() == 1 and Category.objects.count() == 2


def test_command_refuses_a_folder_without_catalog(tmp_path):
    with pytest.raises(CommandError, match="catalog/"):
        call_command("import_catalog", str(tmp_path), "--no-progress")


def test_command_prints_the_skipped_path(catalog_dir, capsys):
    call_command("import_catalog", str(catalog_dir), "--merchant", "Shop", "--no-progress")
    out, err = capsys.readouterr()
    assert "broken.jpg" in err and "truncated" in err
    assert "2 created" in out


@pytest.mark.slow
def test_importing_the_shared_grocery_store(tmp_path):
    report = catalog_import(root=SHARED, merchant_name="Grocery")
    assert report.errors == []
    assert Product.objects.count() == 81
    assert ProductImage.objects.count() == 81
    assert ReviewImage.objects.count() == 2640
