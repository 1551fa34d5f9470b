import json

from django.core.management.base import BaseCommand, CommandError

from ranking.services import RankerTrainingError, ranker_train


class Command(BaseCommand):
    help = (
        "Train CTR rankers on the search logs (time-based split: the latest searches are the test set) "
        "and store them with their offline metrics. Without --activate/--no-activate a version goes live "
        "only if it beats the visual order and the live version on NDCG@10 of its test split."
    )

    def add_arguments(self, parser):
        parser.add_argument("--kind", choices=("lr", "gbdt_lr", "both"), default="both")
        group = parser.add_mutually_exclusive_group()
        group.add_argument("--activate", action="store_true", help="make the new version live whatever its metrics")
        group.add_argument("--no-activate", action="store_true", help="never make it live")
        parser.add_argument("--test-fraction", type=float, default=0.2)

    def handle(self, *args, kind: str, activate: bool, no_activate: bool, test_fraction: float, **options):
        mode = "always" if activate else "never" if no_activate else "auto"
        kinds = ["lr", "gbdt_lr"] if kind == "both" else [kind]
        trained = []
        for name in kinds:
            try:
                # with --activate and both kinds, only the last (GBDT+LR) is forced live
                this_mode = mode if (mode != "always" or name == kinds[-1]) else "never"
                ranker = ranker_train(kind=name, activate=this_mode, test_fraction=test_fraction)
            except RankerTrainingError as exc:
                raise CommandError(str(exc)) from exc
            trained.append(ranker)
            m = ranker.metrics
            self.stdout.write(
                f"{ranker.version}: AUC {_f(m['model']['auc'])} NDCG@10 {_f(m['model']['ndcg@10'])} "
                f"(visual order: AUC {_f(m['visual_order']['auc'])} NDCG@10 {_f(m['visual_order']['ndcg@10'])}); "
                f"train {m['train']['queries']} searches, test {m['test']['queries']}; fit {m['fit_seconds']} s; "
                f"{m['auto_live']['reason']}"
            )
        for ranker in trained:
            ranker.refresh_from_db(fields=["is_live"])
        live = [r.version for r in trained if r.is_live]
        self.stdout.write(self.style.SUCCESS(f"live: {live[0]}") if live else "live version unchanged")
        if options.get("verbosity", 1) > 1:
            self.stdout.write(json.dumps({r.version: r.metrics for r in trained}, indent=2))


def _f(value) -> str:
    return "-" if value is None else f"{value:.4f}"
