from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from search.embedding import embedder_active
from search.indexing import index_rebuild
from search.models import EmbedderVersion
from search.services import embed_sweep


class Command(BaseCommand):
    help = "Embed whatever lacks a vector, then rebuild the live index of an embedder version from the database."

    def add_arguments(self, parser):
        parser.add_argument("--embedder", default="active", help="a version id, or 'active' (default)")

    def handle(self, *args, embedder: str, **options):
        if embedder == "active":
            version = embedder_active()
        else:
            version = EmbedderVersion.objects.filter(version=embedder).first()
            if version is None:
                raise CommandError(f"no embedder version {embedder!r}")
        if version.is_active:
            with tqdm(desc="embedding dirty images", unit="image") as bar:
                while True:
                    n, more = embed_sweep()
                    bar.update(n)
                    if not more or n == 0:
                        break
        result = index_rebuild(
            embedder=version, progress=lambda it: tqdm(list(it), desc="loading vectors", unit="chunk")
        )
        self.stdout.write(f"index {version.version}: {result.total} vectors")
