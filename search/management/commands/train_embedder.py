from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from search import training
from vision.train import TrainConfig, config_field_types


class Command(BaseCommand):
    help = (
        "Fine-tune the embedder (triplet and Proxy-Anchor losses) on product images, accepted review photos and logged "
        "query/click triplets; embed every image into the new version; evaluate it against the active one on "
        "held-out review photos; with --activate, switch to it when it is at least as good."
    )

    def add_arguments(self, parser):
        defaults = TrainConfig()
        for name, kind in config_field_types().items():
            parser.add_argument(
                f"--{name.replace('_', '-')}",
                type=kind,
                default=getattr(defaults, name),
                help=f"default {getattr(defaults, name)}",
            )
        parser.add_argument("--activate", action="store_true", help="switch to the new version if it passes the gate")

    def handle(self, *args, activate: bool, **options):
        config = TrainConfig(**{name: options[name] for name in config_field_types()})
        bars: dict[str, tqdm] = {}

        def progress(stage: str, done: int, total: int) -> None:
            bar = bars.get(stage) or bars.setdefault(stage, tqdm(total=total, desc=stage, file=self.stderr._out))
            bar.update(done - bar.n)

        try:
            outcome = training.embedder_learn(config=config, activate=activate, progress=progress)
        except (training.RolloutError, ValueError) as exc:
            raise CommandError(str(exc)) from exc
        for bar in bars.values():
            bar.close()
        self.stdout.write(f"new version {outcome['version']}")
        for name, result in (("new", outcome["held_out"]), ("active", outcome["active_held_out"])):
            wr, co = result["with_reviews"], result["catalog_only"]
            self.stdout.write(
                f"  held-out {name:6}: with reviews R@1 {wr['recall@1']:.3f} R@5 {wr['recall@5']:.3f} | "
                f"catalog only R@1 {co['recall@1']:.3f} R@5 {co['recall@5']:.3f} ({wr['queries']} photos)"
            )
            if "searches" in result:
                se = result["searches"]
                self.stdout.write(
                    f"  held-out {name:6}: searches R@1 {se['recall@1']:.3f} R@5 {se['recall@5']:.3f} "
                    f"({se['queries']} searches)"
                )
        verdict = (
            "activated" if outcome["activated"] else ("passed the gate" if outcome["passed"] else "not rolled out")
        )
        self.stdout.write(f"{verdict}: {outcome['why']}")
