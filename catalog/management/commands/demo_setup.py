from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from catalog.importer import catalog_import
from catalog.models import Merchant

DEMO_MERCHANT = "Demo Grocer"
DEMO_LOGINS = {"admin": "visualshop-admin", "demo": "visualshop-demo"}


class Command(BaseCommand):
    help = "Quick start: import the demo catalog and create demo staff logins (DEBUG only)."

    def add_arguments(self, parser):
        parser.add_argument("--catalog", type=Path, required=True, help="a catalog folder in the interchange layout")

    def handle(self, *args, catalog: Path, **options):
        if not settings.DEBUG:
            raise CommandError("demo_setup creates logins with known passwords: run it with DJANGO_DEBUG=1 only")
        if not (catalog / "catalog").is_dir():
            raise CommandError(f"{catalog} is not a catalog folder (it needs a catalog/ subfolder)")
        report = catalog_import(
            root=catalog,
            merchant_name=DEMO_MERCHANT,
            progress=lambda rows: tqdm(rows, desc="importing products", unit="product"),
        )
        for path, message in report.errors:
            self.stderr.write(f"skipped {path}: {message}")
        self.stdout.write(
            f"catalog: {report.products_created} new products, {report.images_added} images, "
            f"{report.reviews_added} review photos"
        )

        group, _ = Group.objects.get_or_create(name="Merchant staff")
        group.permissions.set(Permission.objects.filter(content_type__app_label="catalog"))
        User = get_user_model()
        admin, _ = User.objects.get_or_create(username="admin", defaults={"is_staff": True, "is_superuser": True})
        demo, _ = User.objects.get_or_create(username="demo", defaults={"is_staff": True})
        for user in (admin, demo):
            user.set_password(DEMO_LOGINS[user.username])
            user.save()
        demo.groups.add(group)
        Merchant.objects.get(name=DEMO_MERCHANT).staff.add(demo)
        self.stdout.write(
            self.style.SUCCESS("Photo search: http://127.0.0.1:8000/   Staff: http://127.0.0.1:8000/admin/")
        )
        self.stdout.write(f"  merchant staff (sees {DEMO_MERCHANT} only): demo / {DEMO_LOGINS['demo']}")
        self.stdout.write(f"  superuser:                                admin / {DEMO_LOGINS['admin']}")
