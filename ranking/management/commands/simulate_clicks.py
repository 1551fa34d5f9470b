from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from ranking.simulator import SimConfig, simulate, simulation_setup

DEFAULT_FOLDER = Path(settings.BASE_DIR).parent / "shared" / "datasets" / "grocery-store"


class Command(BaseCommand):
    help = (
        "SIMULATOR (development and tests only): simulated shoppers run searches with the review photos "
        "of an interchange folder through the real photo search and click with position bias. "
        "Writes searches, impressions and clicks to this database; --setup also prices unpriced products "
        "and adds 'Sim Market' merchants with price variants. See ranking/simulator.py."
    )

    def add_arguments(self, parser):
        parser.add_argument("--folder", type=Path, default=DEFAULT_FOLDER, help="interchange folder (reviews/ is used)")
        parser.add_argument("--searches", type=int, default=200)
        parser.add_argument("--shoppers", type=int, default=20)
        parser.add_argument("--k", type=int, default=10)
        parser.add_argument("--eta", type=float, default=1.0, help="position bias: examination 1/position**eta")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--setup", action="store_true", help="price unpriced products, add merchant variants")

    def handle(self, *args, folder: Path, setup: bool, **o):
        if not (folder / "reviews").is_dir():
            raise CommandError(f"{folder} has no reviews/ folder")
        if setup:
            self.stdout.write(f"setup: {simulation_setup(seed=o['seed'])}")
        config = SimConfig(searches=o["searches"], shoppers=o["shoppers"], k=o["k"], eta=o["eta"], seed=o["seed"])
        try:
            report = simulate(folder=folder, config=config)
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        by_pos = ", ".join(f"{p}: {n}" for p, n in sorted(report.clicks_by_position.items()))
        self.stdout.write(
            f"simulated {report.searches} searches, {report.clicks} clicks (by position {by_pos}); "
            f"skipped {report.skipped_photos} photos stored in the catalog"
        )
