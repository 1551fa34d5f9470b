from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from rest_framework.authtoken.models import Token

from catalog.models import Merchant


class Command(BaseCommand):
    help = "Create (or show) the API token of a partner: a user tied to one merchant, for /api/v1/partner/."

    def add_arguments(self, parser):
        parser.add_argument("--merchant", required=True, help="merchant name or slug")
        parser.add_argument("--user", help="username (default: partner-<merchant slug>)")
        parser.add_argument("--rotate", action="store_true", help="replace an existing token")

    def handle(self, *args, merchant: str, user: str | None, rotate: bool, **options):
        shop = Merchant.objects.filter(name=merchant).first() or Merchant.objects.filter(slug=merchant).first()
        if shop is None:
            raise CommandError(f"no merchant {merchant!r}")
        account, _ = get_user_model().objects.get_or_create(username=user or f"partner-{shop.slug}")
        others = account.merchants.exclude(pk=shop.pk)
        if others.exists():
            raise CommandError(f"{account.username} already belongs to {others.first().name}")
        shop.staff.add(account)
        if rotate:
            Token.objects.filter(user=account).delete()
        token, created = Token.objects.get_or_create(user=account)
        self.stdout.write(token.key)
        self.stderr.write(f"{'new' if created else 'existing'} token of {account.username} for {shop.name}")
