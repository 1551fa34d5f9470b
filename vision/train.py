"""Metric-learning fine-tuning of an embedder: triplet loss with batch-hard (or semi-hard)
mining, plus (by default, while the blocks train) a Proxy-Anchor loss with one proxy per
product, from pytorch-metric-learning.

What it learns from (vision.train_data; the caller, search/training.py, turns the database
into these lists):

- :class:`Photo` rows labelled with a product: the product's own images ("catalog"), its
  accepted review photos ("review"), and logged query photos labelled with the product
  the shopper clicked ("query");
- :class:`HardNegatives`: for a logged query, the clicked product and the products shown
  above it but skipped. A batch seeded from such a group holds those products side by
  side, so the miner meets them as negatives of each other.

Why a step can be cheap on a CPU: the first ``train_from`` blocks of the backbone stay frozen,
so each photo is decoded once, cut into ``views`` augmented crops (view 0 is the plain
evaluation crop), and passed through the frozen blocks once. Training then runs only the
last blocks and the projection head, on those cached activations (fp16, in memory).
``views=0`` trades that speed for variety: every step draws a fresh crop of each photo
(decoded once, kept in memory) and runs the frozen blocks on it, as MODELS.md's recipe does.

Before the blocks train, the head is warmed up alone on pooled features of the frozen
network (linear probing, then fine-tuning: the blocks start from a head that already
separates the products, so their first gradients do not undo the pretrained features).
With ``soup=N`` the blocks are fine-tuned N times from that head, each run on its own
batches and crops, and the runs' weights are averaged.

The result is a checkpoint (vision.embed.save_checkpoint) that carries the training
arguments, the loss history and the timings; :func:`vision.embed.make_embedder` loads it.
"""

from __future__ import annotations

import copy
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vision.embed import (
    DEFAULT_ARCH,
    Preprocess,
    ProjectionHead,
    TorchvisionEmbedder,
    build_backbone,
    optimize_for_inference,
    save_checkpoint,
)
from vision.train_data import (
    BatchSampler,
    HardNegatives,
    Photo,
    Progress,
    augmentation,
    cache_views,
    class_centroids,
    decode_all,
    neighbour_classes,
)


@dataclass(frozen=True)
class TrainConfig:
    arch: str = DEFAULT_ARCH
    # backbone.features[train_from:] and the head are trained; 0: the whole network. The whole
    # network scored 0.856 / 0.831 on the distinct split (two seeds) where features[14:]
    # scored 0.846 / 0.808, at ~2.6x the time per step (README).
    train_from: int = 0
    head_dim: int = 256
    # Side of the square the network sees, in training and in the embedder it produces
    # (search and ingestion use the checkpoint's own preprocessing). Evaluation crops it
    # from a short side 8/7 as long, as torchvision's 224-of-256 recipe does. 256 scored
    # lower on the distinct split than 224 (README), at ~1.3x the time per step.
    image_size: int = 224
    # First the head alone, on pooled features of the frozen network ("linear probing"),
    # then the blocks with that head (MODELS.md's recipe): a random head's first gradients
    # would pull the pretrained blocks towards an arbitrary projection.
    head_warmup_steps: int = 1000
    head_warmup_views: int = 4  # crops per photo whose pooled features the head sees
    head_warmup_lr: float = 1e-2
    # Fine-tuning steps; 0: the warmed-up head alone. 1,200 scored 0.895 / 0.855 on the
    # distinct split against 600's 0.884 / 0.826 (seed 0; README), at twice the time.
    steps: int = 1200
    classes_per_batch: int = 16
    per_class: int = 4
    # 0: a fresh augmented crop of each photo at every step (MODELS.md's recipe, ~4x slower
    # on a CPU); N: N crops per photo cut and run through the frozen blocks once, cached.
    views: int = 0
    lr: float = 1e-3  # the head
    backbone_lr: float = 1e-4  # the trained backbone blocks
    weight_decay: float = 1e-4
    margin: float = 0.2
    # "hinge": max(0, d(a,p) - d(a,n) + margin); "softplus": log(1 + exp(...)), the soft
    # margin of Hermans et al. (2017, with margin 0) for batch-hard mining: anchors already
    # past the margin still pull, a little. Softplus with margin 0 scored lower on the
    # distinct split than the hinge (README).
    margin_loss: str = "hinge"
    crop_scale: float = 0.35  # the smallest share of a photo that a training crop covers
    # "light" or "strong" (adds perspective, stronger light changes and blur: see
    # train_data.augmentation). "strong" scored lower on the distinct split (README).
    augment: str = "light"
    mining: str = "batch_hard"  # or "semi_hard"
    # Cross-batch memory (XBM, Wang et al., 2020): while the blocks train, each batch's
    # anchors are also mined against the last ``memory`` embeddings (detached), so a batch
    # of 64 meets negatives from ~memory photos, as a large GPU batch would; the loss is
    # the in-batch loss plus that one. 0: off. Not used while the head warms up alone.
    # 1,024 scored lower on the distinct split than no memory (README).
    memory: int = 0
    # Proxy-Anchor (Kim et al., 2020): while the blocks train, the step's loss also holds
    # ``proxy_weight`` x a loss that pulls each photo towards its product's proxy and away
    # from every other product's, so each step meets all products, not only the batch's 16.
    # The proxies start at the products' mean embeddings under the warmed-up head (random
    # without a warm-up) and learn at ``proxy_lr``. 0: off. 1 scored 0.884 / 0.826 on the
    # distinct split against the triplet loss alone's 0.860 / 0.820 (seed 0), and 0.840 /
    # 0.807 on the query photos over two seeds against 0.830 / 0.806 (README).
    proxy_weight: float = 1.0
    proxy_lr: float = 1e-2
    # "frozen": the pretrained statistics; "train": batch statistics while training, running
    # averages updated for inference. "train" scored 2-3 points higher catalog-only on each
    # product's least typical review photos (benchmarks/train_bench.py --split distinct) but
    # lower on the query photos (README): within the spread between seeds, so not adopted.
    batchnorm: str = "frozen"
    # Fine-tuning runs from the one warmed-up head, each with its own batches and crops,
    # whose weights are then averaged (a "model soup", Wortsman et al., 2022): the average
    # varies less from seed to seed than one run does. Each run takes ``steps`` steps. Two
    # runs scored within the spread of single runs on the query photos (README): default 1.
    soup: int = 1
    catalog_share: float = 0.5  # chance that a class in a batch brings one of its catalog images
    hard_negative_share: float = 0.25  # share of batches seeded from logged hard negatives
    # Share of the fine-tuning batches made of look-alike products: groups of a product and
    # its ``neighbours`` nearest products (class centroids under the warmed-up head). At
    # random, two given products meet in a batch of 16 of 81 one time in five. 0.5 scored 3
    # points higher catalog-only on the distinct split, lower on the query photos (README).
    neighbour_share: float = 0.0
    neighbours: int = 3
    # "bf16": the fine-tuning steps run under bfloat16 autocast (weights and loss stay
    # float32). Only 4% faster than channels-last fp32 on these AVX512-BF16 CPUs and 2.6
    # points lower on the distinct split (README); emulated, and slower, without BF16.
    precision: str = "fp32"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.mining not in ("batch_hard", "semi_hard"):
            raise ValueError("mining must be batch_hard or semi_hard")
        if self.augment not in ("light", "strong"):
            raise ValueError("augment must be light or strong")
        if self.margin_loss not in ("hinge", "softplus"):
            raise ValueError("margin_loss must be hinge or softplus")
        if self.batchnorm not in ("frozen", "train"):
            raise ValueError("batchnorm must be frozen or train")
        if self.precision not in ("fp32", "bf16"):
            raise ValueError("precision must be fp32 or bf16")
        if self.classes_per_batch < 2 or self.per_class < 2:
            raise ValueError("a batch needs at least 2 classes of at least 2 photos")
        if self.image_size < 32:
            raise ValueError("image_size must be at least 32")
        if self.steps < 0 or self.views < 0 or self.head_dim < 1 or self.head_warmup_steps < 0:
            raise ValueError("head_dim must be positive; steps, views and head_warmup_steps not negative")
        if self.steps + self.head_warmup_steps == 0:
            raise ValueError("nothing to train: steps and head_warmup_steps are both 0")
        if self.head_warmup_views < 1:
            raise ValueError("head_warmup_views must be at least 1")
        if not 0 < self.crop_scale <= 1:
            raise ValueError("crop_scale must be in (0, 1]")
        if self.soup < 1:
            raise ValueError("soup must be at least 1")
        if self.memory and self.memory < self.batch_size:
            raise ValueError(f"memory must be 0 or at least a batch ({self.batch_size})")
        if self.proxy_weight < 0:
            raise ValueError("proxy_weight must not be negative")
        if not 0 <= self.neighbour_share <= 1 or self.neighbours < 1:
            raise ValueError("neighbour_share must be in [0, 1] and neighbours at least 1")

    @property
    def batch_size(self) -> int:
        return self.classes_per_batch * self.per_class

    @property
    def rows_per_photo(self) -> int:
        """Rows of the training inputs per photo: its cached crops, or 1 for fresh crops."""
        return max(1, self.views)


def config_field_types() -> dict[str, type]:
    """Each TrainConfig field's type, as its default has it: command-line values parse with it."""
    defaults = TrainConfig()
    return {f.name: type(getattr(defaults, f.name)) for f in fields(TrainConfig)}


def parse_overrides(pairs: Sequence[str]) -> dict[str, Any]:
    """``FIELD=VALUE`` strings as TrainConfig keyword arguments, each value parsed as its
    field's type (the benchmarks' ``--set``)."""
    types = config_field_types()
    out: dict[str, Any] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or name not in types:
            raise ValueError(f"want FIELD=VALUE with a TrainConfig field, got {pair!r}")
        out[name] = types[name](value)
    return out


State = tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]  # (backbone, head) state dicts


def _snapshot(backbone: nn.Module, head: nn.Module) -> State:
    def copied(module: nn.Module) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in module.state_dict().items()}

    return copied(backbone), copied(head)


def average_states(states: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The mean of each floating-point tensor; the others (BatchNorm's batch counters) from the first."""
    return {
        k: torch.stack([s[k] for s in states]).mean(0) if v.is_floating_point() else v for k, v in states[0].items()
    }


def _embedder(
    arch: str,
    head: ProjectionHead,
    preprocess: Preprocess,
    backbone_state: dict[str, torch.Tensor],
    weights_name: str | None,
) -> TorchvisionEmbedder:
    """An inference embedder of trained weights, named after the pretrained weights they started from."""
    embedder = TorchvisionEmbedder(
        arch, projection=head, preprocess=preprocess, weights=None, backbone_state=backbone_state
    )
    embedder.weights_name = weights_name
    return embedder


@dataclass
class TrainResult:
    embedder: TorchvisionEmbedder
    config: TrainConfig
    photos: int
    skipped: list[str]  # sources that could not be decoded
    loss_history: list[tuple[int, float]]  # (step, mean loss over the last stretch)
    timings: dict[str, float] = field(default_factory=dict)
    members: list[State] = field(default_factory=list)  # each fine-tuning run's weights, with a soup
    neighbours: dict[int, list[int]] = field(default_factory=dict)  # each product's look-alikes, if sought

    def embedder_with(self, state: State) -> TorchvisionEmbedder:
        """This result's embedder with other weights (one of ``members``)."""
        backbone_state, head_state = state
        head = copy.deepcopy(self.embedder.net.head)
        head.load_state_dict(head_state)
        return _embedder(self.config.arch, head, self.embedder.preprocess, backbone_state, self.embedder.weights_name)

    def save(self, path: str | Path, *, metrics: dict[str, Any] | None = None) -> Path:
        net = self.embedder.net
        return save_checkpoint(
            path,
            arch=self.config.arch,
            preprocess=self.embedder.preprocess,
            head=net.head,
            weights=self.embedder.weights_name,
            backbone_state=net.backbone.state_dict(),
            args={**asdict(self.config), "photos": self.photos},
            metrics={
                **(metrics or {}),
                "training": {**self.timings, "loss": self.loss_history[-1][1] if self.loss_history else None},
                "loss_history": self.loss_history,
            },
        )


def split_backbone(backbone: nn.Module, train_from: int) -> tuple[nn.Module, nn.Module]:
    """(frozen, trained) parts of a torchvision backbone with a ``features`` Sequential
    (MobileNet, EfficientNet, ...): the trained part ends with global pooling."""
    features = getattr(backbone, "features", None)
    if not isinstance(features, nn.Sequential):
        raise ValueError("fine-tuning needs a backbone with a `features` Sequential (MobileNet, EfficientNet)")
    if not 0 <= train_from <= len(features):
        raise ValueError(f"train_from must be within 0..{len(features)}")
    frozen = features[:train_from]
    trained = nn.Sequential(*features[train_from:], nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
    return frozen, trained


def _frozen_runner(frozen: nn.Module, preprocess: Preprocess) -> Callable[[torch.Tensor], torch.Tensor]:
    """The frozen blocks traced and frozen for oneDNN: ~5x faster than eager here. Their
    activations are not normalised, so the drift allowed is relative to their scale."""
    return optimize_for_inference(frozen, preprocess.size, tolerance=1e-3) if len(frozen) else frozen


def _loss_and_miner(cfg: TrainConfig):
    from pytorch_metric_learning import losses, miners

    loss = losses.TripletMarginLoss(margin=cfg.margin, smooth_loss=cfg.margin_loss == "softplus")
    if cfg.mining == "batch_hard":
        miner = miners.BatchHardMiner()
    else:
        miner = miners.TripletMarginMiner(margin=cfg.margin, type_of_triplets="semihard")
    return loss, miner


def _with_memory(loss_fn: Callable, cfg: TrainConfig) -> Callable:
    """``loss_fn`` plus the same loss with each anchor mined against a fresh cross-batch memory."""
    from pytorch_metric_learning import losses

    memory_loss, memory_miner = _loss_and_miner(cfg)
    memory = losses.CrossBatchMemory(memory_loss, cfg.head_dim, memory_size=cfg.memory, miner=memory_miner)

    def loss(emb: torch.Tensor, y: torch.Tensor, indices: Any) -> torch.Tensor:
        return loss_fn(emb, y, indices) + memory(emb, y)

    return loss


def _with_proxies(
    loss_fn: Callable, cfg: TrainConfig, classes: np.ndarray, centroids: np.ndarray | None
) -> tuple[Callable, list[nn.Parameter]]:
    """``loss_fn`` plus ``proxy_weight`` x a Proxy-Anchor loss over ``classes`` (their
    proxies start at ``centroids``); returns the loss and the proxies to optimise."""
    from pytorch_metric_learning import losses

    proxy = losses.ProxyAnchorLoss(len(classes), cfg.head_dim)
    if centroids is not None:
        with torch.no_grad():
            proxy.proxies.copy_(torch.from_numpy(centroids))
    index = {int(c): i for i, c in enumerate(classes)}

    def loss(emb: torch.Tensor, y: torch.Tensor, indices: Any) -> torch.Tensor:
        proxy_y = torch.tensor([index[int(label)] for label in y])
        return loss_fn(emb, y, indices) + cfg.proxy_weight * proxy(emb, proxy_y)

    return loss, list(proxy.parameters())


def _pooled_views(
    inputs: Callable[[list[int]], torch.Tensor],
    trained: nn.Module,
    n_photos: int,
    cfg: TrainConfig,
    progress: Progress | None,
) -> torch.Tensor:
    """[head_warmup_views, n_photos, dim] pooled features: with cached crops, view k of each
    photo (view 0 is the plain crop); otherwise a fresh augmented crop per pass."""
    per_row = cfg.rows_per_photo
    passes = []
    with torch.no_grad():
        for v in range(cfg.head_warmup_views):
            rows = [i * per_row + v % per_row for i in range(n_photos)]
            passes.append(torch.cat([trained(inputs(rows[j : j + 64])) for j in range(0, n_photos, 64)]))
            if progress:
                progress("pool", v + 1, cfg.head_warmup_views)
    return torch.stack(passes)


def _optimise(
    forward: Callable[[list[int]], torch.Tensor],
    opt: torch.optim.Optimizer,
    steps: int,
    sampler: BatchSampler,
    loss_fn: Callable,
    miner: Callable,
    stage: str,
    progress: Progress | None,
) -> list[tuple[int, float]]:
    """``steps`` steps of ``loss_fn`` on the sampler's batches, the learning rate warmed up
    over the first 5% and then cosine-annealed; returns (step, mean loss) every ~1/30."""
    warmup = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))
    )
    history: list[tuple[int, float]] = []
    window: list[float] = []
    every = max(1, steps // 30)
    for step in range(1, steps + 1):
        rows, labels = sampler.batch()
        y = torch.tensor(labels)
        emb = nn.functional.normalize(forward(rows), dim=1)
        loss = loss_fn(emb, y, miner(emb, y))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        window.append(float(loss.detach()))
        if step % every == 0 or step == steps:
            history.append((step, round(float(np.mean(window)), 5)))
            window.clear()
        if progress:
            progress(stage, step, steps)
    return history


def train(
    photos: Sequence[Photo],
    hard_negatives: Sequence[HardNegatives] = (),
    config: TrainConfig | None = None,
    *,
    pretrained_weights: str | None = "auto",
    progress: Progress | None = None,
) -> TrainResult:
    """Fine-tune an embedder on labelled photos; returns it with its history and timings.

    The backbone starts from torchvision's pretrained weights (``pretrained_weights=None``:
    random, for tests) and the head from a seeded random projection.
    """
    cfg = config or TrainConfig()
    torch.manual_seed(cfg.seed)
    backbone, weights_name = build_backbone(cfg.arch, weights=pretrained_weights, seed=cfg.seed)
    preprocess = Preprocess(size=cfg.image_size, resize=round(cfg.image_size * 8 / 7))
    frozen, trained = split_backbone(backbone, cfg.train_from)
    with torch.no_grad():
        dim = trained(frozen(torch.zeros(1, 3, preprocess.size, preprocess.size))).shape[1]
    head = ProjectionHead(int(dim), cfg.head_dim)
    frozen.eval().requires_grad_(False)

    t0 = time.perf_counter()
    if cfg.views:
        cache, kept, skipped = cache_views(photos, _frozen_runner(frozen, preprocess), preprocess, cfg, progress)

        def inputs(rows: list[int]) -> torch.Tensor:
            return cache[rows].float().contiguous(memory_format=torch.channels_last)
    else:
        images, kept, skipped = decode_all(photos, preprocess, progress)
        run_frozen = _frozen_runner(frozen, preprocess)
        augment, to_tensor = augmentation(preprocess, cfg.crop_scale, cfg.augment), preprocess.tensor_transform()

        def inputs(rows: list[int]) -> torch.Tensor:
            with torch.no_grad():
                x = run_frozen(torch.stack([to_tensor(augment(images[r])) for r in rows]))
                return x.contiguous(memory_format=torch.channels_last)

    t_cache = time.perf_counter() - t0
    # Channels-last weights and inputs: oneDNN's preferred layout for convolutions, ~1.5x
    # faster per training step on these CPUs than the default layout, the same arithmetic.
    trained.to(memory_format=torch.channels_last)
    kept_photos = [photos[i] for i in kept]
    sampler_labels, sampler_kinds = [p.label for p in kept_photos], [p.kind for p in kept_photos]
    sampler = BatchSampler(sampler_labels, sampler_kinds, hard_negatives, cfg)

    loss_fn, miner = _loss_and_miner(cfg)

    t1 = time.perf_counter()
    warmup_history: list[tuple[int, float]] = []
    # Pooled features of each photo under a few crops, for the head's warm-up and for
    # finding each product's look-alikes.
    pooled = None
    seek_neighbours = bool(cfg.steps and cfg.neighbour_share)
    if cfg.head_warmup_steps or seek_neighbours:
        trained.eval()
        pooled = _pooled_views(inputs, trained, len(kept_photos), cfg, progress)
    if cfg.head_warmup_steps:
        # Each step shows every photo of the batch as one of its crops. Only the head's
        # gradients exist, so a step takes ~1 ms.
        pick = random.Random(cfg.seed + 1)

        def probe(rows: list[int]) -> torch.Tensor:
            photo_of = [r // cfg.rows_per_photo for r in rows]
            return head(pooled[[pick.randrange(len(pooled)) for _ in rows], photo_of])

        head.train()
        opt = torch.optim.AdamW(head.parameters(), lr=cfg.head_warmup_lr, weight_decay=cfg.weight_decay)
        warmup_history = _optimise(probe, opt, cfg.head_warmup_steps, sampler, loss_fn, miner, "head", progress)
    t_warmup = time.perf_counter() - t1

    neighbours: dict[int, list[int]] = {}
    vectors = None  # each photo's mean embedding over its crops, under the warmed-up head
    if pooled is not None and (seek_neighbours or cfg.proxy_weight):
        with torch.no_grad():
            vectors = nn.functional.normalize(head(pooled), dim=-1).mean(0).numpy()
    if seek_neighbours:
        neighbours = neighbour_classes(vectors, sampler_labels, cfg.neighbours)
        sampler.neighbours = neighbours
    if cfg.proxy_weight:  # proxies start at the products' centroids; random without a warm-up
        classes, centroids = np.unique(sampler_labels), None
        if cfg.head_warmup_steps:
            classes, centroids = class_centroids(vectors, sampler_labels)

    def fine_tuned(rows: list[int]) -> torch.Tensor:
        x = inputs(rows)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.precision == "bf16"):
            return head(trained(x)).float()

    history: list[tuple[int, float]] = []
    members: list[State] = []
    t2 = time.perf_counter()
    if cfg.steps:
        warmed = _snapshot(backbone, head) if cfg.soup > 1 else None
        for k in range(cfg.soup):
            if warmed and k:
                backbone.load_state_dict(warmed[0])
                head.load_state_dict(warmed[1])
                sampler = BatchSampler(
                    sampler_labels, sampler_kinds, hard_negatives, replace(cfg, seed=cfg.seed + 1000 * k)
                )
                sampler.neighbours = neighbours
            # Frozen: BatchNorm keeps its pretrained statistics (gradients still flow); train:
            # batch statistics, and running averages updated for inference.
            trained.train(cfg.batchnorm == "train")
            for p in trained.parameters():
                p.requires_grad_(True)
            head.train()
            params = [
                {"params": list(trained.parameters()), "lr": cfg.backbone_lr},
                {"params": list(head.parameters()), "lr": cfg.lr},
            ]
            step_loss = _with_memory(loss_fn, cfg) if cfg.memory else loss_fn
            if cfg.proxy_weight:
                step_loss, proxies = _with_proxies(step_loss, cfg, classes, centroids)
                params.append({"params": proxies, "lr": cfg.proxy_lr, "weight_decay": 0.0})
            opt = torch.optim.AdamW(params, weight_decay=cfg.weight_decay)
            stage = "train" if cfg.soup == 1 else f"train {k + 1}/{cfg.soup}"
            history = _optimise(fine_tuned, opt, cfg.steps, sampler, step_loss, miner, stage, progress)
            if warmed:
                members.append(_snapshot(backbone, head))
        if members:
            backbone.load_state_dict(average_states([m[0] for m in members]))
            head.load_state_dict(average_states([m[1] for m in members]))
    t_train = time.perf_counter() - t2

    head.eval()
    trained.eval()
    embedder = _embedder(cfg.arch, head, preprocess, backbone.state_dict(), weights_name)
    steps_per_epoch = len(kept_photos) / cfg.batch_size
    timings: dict[str, Any] = {
        "threads": torch.get_num_threads(),
        "cache_seconds": round(t_cache, 2),
        "head_warmup_seconds": round(t_warmup, 2),
        "head_warmup_loss": warmup_history[-1][1] if warmup_history else None,
        "train_seconds": round(t_train, 2),
        "epochs": round(cfg.soup * cfg.steps / steps_per_epoch, 2),
    }
    if cfg.steps:
        timings["seconds_per_step"] = round(t_train / (cfg.soup * cfg.steps), 4)
        # An epoch: as many photos as the training set holds, drawn in batches.
        timings["seconds_per_epoch"] = round(t_train / (cfg.soup * cfg.steps) * steps_per_epoch, 2)
    return TrainResult(
        embedder, cfg, len(kept_photos), skipped, history or warmup_history, timings, members, neighbours
    )


__all__ = [
    "TrainConfig",
    "TrainResult",
    "average_states",
    "config_field_types",
    "parse_overrides",
    "split_backbone",
    "train",
]
