from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from search import training
from search.models import EmbedderVersion


class Command(BaseCommand):
    help = (
        "Make an embedder version the one that serves search (roll out or roll back): embed the images it "
        "lacks, build its index, carry the review-cleaning thresholds over, switch. Lists versions without one."
    )

    def add_arguments(self, parser):
        parser.add_argument("version", nargs="?", help="a version id (see the list without arguments)")

    def handle(self, *args, version: str | None, **options):
        if version is None:
            for row in EmbedderVersion.objects.all():
                held = row.metrics.get("held_out", {})
                score = " ".join(f"{mode} R@1 {held[mode]['recall@1']:.3f}" for mode in sorted(held))
                self.stdout.write(f"{'*' if row.is_active else ' '} {row.version}  {row.created_at:%Y-%m-%d}  {score}")
            return
        row = EmbedderVersion.objects.filter(version=version).first()
        if row is None:
            raise CommandError(f"no embedder version {version!r} (run without arguments to list them)")
        bars: dict[str, tqdm] = {}

        def progress(stage: str, done: int, total: int) -> None:
            bar = bars.get(stage) or bars.setdefault(stage, tqdm(total=total, desc=stage, file=self.stderr._out))
            bar.update(done - bar.n)

        try:
            training.embedder_activate(embedder=row, progress=progress)
        except (training.RolloutError, OSError, ValueError) as exc:
            raise CommandError(f"{version} not activated: {exc}") from exc
        self.stdout.write(f"active embedder: {row.version}")
