from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from search.models import EmbedderVersion


def embedder_name(choice: str) -> str:
    """`active`, `latest` (newest trained), a version id, or a vision.embed name. Reads only."""
    if choice == "active":
        active = EmbedderVersion.objects.filter(is_active=True).first()
        return active.name if active else settings.VISUALSHOP_EMBEDDER
    if choice == "latest":
        trained = EmbedderVersion.objects.filter(name__endswith=".pt").order_by("-created_at").first()
        if trained is None:
            raise CommandError("no trained embedder yet (python manage.py train_embedder)")
        return trained.name
    row = EmbedderVersion.objects.filter(version=choice).first()
    return row.name if row else choice


class Command(BaseCommand):
    help = (
        "Evaluate search on a catalog folder (catalog/, reviews/, queries/): a throwaway index, every query through "
        "the production search pipeline; recall@1/5/10, MRR and per-stage latency. Writes nothing to the platform."
    )

    def add_arguments(self, parser):
        parser.add_argument("directory", type=Path)
        parser.add_argument("--catalog-only", action="store_true", help="index catalog/ only, not reviews/")
        parser.add_argument(
            "--embedder",
            default="active",
            help="a version id, 'active' (default), 'latest' (newest trained), or e.g. 'pixels'",
        )
        parser.add_argument("--detector", default=None, help="nanodet (default), none, or a torchvision detector")
        parser.add_argument("--json", type=Path, help="write the report here")
        parser.add_argument(
            "--examples", type=Path, help="PNG of example queries and their top-5 (default: next to --json)"
        )
        parser.add_argument("--max-queries", type=int, default=None, help="an evenly spread subset, for quick checks")

    def handle(
        self,
        *args,
        directory: Path,
        catalog_only: bool,
        embedder: str,
        detector: str | None,
        json: Path | None,
        examples: Path | None,
        max_queries: int | None,
        **options,
    ):
        import torch

        from search.pipeline import search_config
        from vision.evaluate import evaluate_folder, render_examples

        if not (directory / "catalog").is_dir() or not (directory / "queries").is_dir():
            raise CommandError(f"{directory} needs catalog/ and queries/ folders")
        torch.set_num_threads(settings.TORCH_THREADS)
        bars: dict[str, tqdm] = {}

        def progress(stage: str, done: int, total: int) -> None:
            bar = bars.get(stage) or bars.setdefault(
                stage, tqdm(total=total, desc=stage, unit="photo", file=self.stderr._out)
            )
            bar.update(done - bar.n)

        report = evaluate_folder(
            directory,
            embedder=embedder_name(embedder),
            detector=detector,
            catalog_only=catalog_only,
            config=search_config(),
            progress=progress,
            max_queries=max_queries,
        )
        for bar in bars.values():
            bar.close()
        self.stdout.write(report.summary_table())
        if json:
            json.parent.mkdir(parents=True, exist_ok=True)
            json.write_text(report.to_json(include_queries=True))
            self.stdout.write(f"report written to {json}")
        png = examples or (json.with_suffix(".png") if json else None)
        if png:
            render_examples(report, png)
            self.stdout.write(f"examples written to {png}")
