"""Metric-learning fine-tuning (vision.train): configuration, training, checkpoints, soups."""

import io
import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from vision.embed import make_embedder
from vision.train import TrainConfig, split_backbone, train
from vision.train_data import Photo, embed_photos


def test_config_refuses_nonsense():
    with pytest.raises(ValueError):
        TrainConfig(mining="random")
    with pytest.raises(ValueError):
        TrainConfig(per_class=1)
    with pytest.raises(ValueError):
        TrainConfig(batchnorm="sometimes")
    with pytest.raises(ValueError):
        TrainConfig(crop_scale=0)
    with pytest.raises(ValueError):
        TrainConfig(precision="fp16")
    with pytest.raises(ValueError):
        TrainConfig(image_size=16)
    with pytest.raises(ValueError):
        TrainConfig(margin_loss="square")
    with pytest.raises(ValueError):
        TrainConfig(augment="heavy")
    with pytest.raises(ValueError):
        TrainConfig(proxy_weight=-1)


def test_split_backbone_keeps_the_full_network():
    from vision.embed import build_backbone

    backbone, _ = build_backbone("mobilenet_v2", weights=None)
    frozen, trained = split_backbone(backbone, 14)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(trained(frozen(x)), torch.flatten(backbone(x), 1), atol=1e-5)
    with pytest.raises(ValueError):
        split_backbone(torch.nn.Linear(2, 2), 1)


def _pattern(label: int, seed: int) -> bytes:
    """Product `label`: a colour and stripe frequency of its own, seen with noise."""
    rng = np.random.default_rng(seed)
    base = np.array([(label * 80) % 256, (label * 150 + 60) % 256, (label * 40 + 120) % 256], np.float32)
    x = np.arange(96)[None, :, None]
    stripes = 60 * np.sin(x * (0.2 + 0.25 * label))
    pixels = np.clip(base + stripes + rng.normal(0, 25, (96, 96, 3)), 0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "PNG")
    return out.getvalue()


@pytest.mark.weights
def test_fine_tuning_lowers_the_loss_trains_only_the_last_blocks_and_round_trips(tmp_path):
    torch.set_num_threads(1)
    photos = [Photo(_pattern(c, 100 * c + j), c, "catalog" if j == 0 else "review") for c in range(4) for j in range(4)]
    cfg = TrainConfig(
        steps=30,
        head_warmup_steps=0,
        classes_per_batch=4,
        per_class=3,
        views=2,
        head_dim=32,
        lr=3e-3,
        seed=1,
        train_from=14,
    )  # no warm-up: the head alone would already separate these patterns
    before = make_embedder("mobilenet_v2")
    result = train(photos, config=cfg)
    assert result.photos == 16 and not result.skipped
    first, last = result.loss_history[0][1], result.loss_history[-1][1]
    assert last < first, result.loss_history
    # the frozen blocks are the pretrained ones; the trained blocks moved
    old, new = before.net.backbone.state_dict(), result.embedder.net.backbone.state_dict()
    assert torch.equal(old["features.13.conv.0.0.weight"], new["features.13.conv.0.0.weight"])
    assert not torch.equal(old["features.14.conv.0.0.weight"], new["features.14.conv.0.0.weight"])
    # the checkpoint carries its arguments and gives the same vectors back
    path = result.save(tmp_path / "ft.pt", metrics={"note": "test"})
    loaded = make_embedder(str(path))
    assert loaded.version == result.embedder.version and loaded.dim == 32
    vecs, kept = embed_photos(loaded, photos)
    ref, _ = embed_photos(result.embedder, photos)
    assert kept == list(range(16)) and np.allclose(vecs, ref, atol=1e-5)
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["args"]["steps"] == 30 and ckpt["args"]["train_from"] == 14
    assert ckpt["metrics"]["training"]["seconds_per_epoch"] > 0


def test_undecodable_photos_are_skipped_not_fatal():
    photos = [Photo(b"not an image", 0), Photo(_pattern(0, 1), 0), Photo(_pattern(1, 2), 1), Photo(_pattern(1, 3), 1)]
    cfg = TrainConfig(steps=2, head_warmup_steps=2, classes_per_batch=2, per_class=2, views=1, head_dim=8)
    result = train(photos, config=cfg, pretrained_weights=None)
    assert result.photos == 3 and result.skipped == ["<bytes #0>"]


def test_fresh_crops_at_every_step_train_without_a_cache():
    photos = [Photo(_pattern(c, 10 * c + j), c) for c in range(3) for j in range(3)] + [Photo(b"broken", 0)]
    cfg = TrainConfig(steps=3, head_warmup_steps=0, classes_per_batch=2, per_class=2, views=0, head_dim=8)
    result = train(photos, config=cfg, pretrained_weights=None)
    assert result.photos == 9 and len(result.skipped) == 1
    assert [step for step, _ in result.loss_history] == [1, 2, 3]
    assert result.timings["head_warmup_loss"] is None
    with pytest.raises(ValueError):
        TrainConfig(views=-1)
    with pytest.raises(ValueError):
        TrainConfig(steps=0, head_warmup_steps=0)


def test_bfloat16_steps_at_another_image_size_train_and_the_embedder_keeps_that_size(tmp_path):
    from vision.embed import build_backbone

    torch.set_num_threads(1)
    photos = [Photo(_pattern(c, 10 * c + j), c) for c in range(3) for j in range(3)]
    cfg = TrainConfig(
        steps=4,
        head_warmup_steps=0,
        classes_per_batch=3,
        per_class=2,
        views=0,
        head_dim=8,
        image_size=64,
        precision="bf16",
        lr=1e-2,
        backbone_lr=1e-2,
    )
    result = train(photos, config=cfg, pretrained_weights=None)
    assert [step for step, _ in result.loss_history] == [1, 2, 3, 4]
    # the weights moved and stayed float32; the embedder sees what training saw, 64 of 73
    untouched = build_backbone("mobilenet_v2", weights=None, seed=cfg.seed)[0].state_dict()
    trained = result.embedder.net.backbone.state_dict()
    assert trained["features.0.0.weight"].dtype == torch.float32
    assert not torch.equal(untouched["features.0.0.weight"], trained["features.0.0.weight"])
    pre = result.embedder.preprocess
    assert (pre.size, pre.resize) == (64, 73)
    loaded = make_embedder(str(result.save(tmp_path / "bf16.pt")))
    assert loaded.preprocess == pre
    vecs, kept = embed_photos(loaded, photos)
    assert kept == list(range(9)) and np.allclose(vecs, embed_photos(result.embedder, photos)[0], atol=1e-5)


def test_head_warm_up_alone_trains_the_head_and_leaves_the_backbone():
    from vision.embed import build_backbone

    torch.set_num_threads(1)
    photos = [Photo(_pattern(c, 10 * c + j), c) for c in range(4) for j in range(4)]
    cfg = TrainConfig(
        steps=0, head_warmup_steps=60, head_warmup_views=2, classes_per_batch=4, per_class=3, views=0, head_dim=16
    )
    result = train(photos, config=cfg, pretrained_weights=None)
    history = result.loss_history
    assert history[-1][0] == 60 and history[-1][1] < history[0][1], history
    assert result.timings["head_warmup_loss"] == history[-1][1] and result.timings["train_seconds"] == 0
    untouched, _ = build_backbone("mobilenet_v2", weights=None, seed=cfg.seed)
    for key, value in untouched.state_dict().items():
        assert torch.equal(value, result.embedder.net.backbone.state_dict()[key]), key


@pytest.mark.parametrize("batchnorm", ["train", "frozen"])
def test_batchnorm_statistics_adapt_in_the_trained_blocks_only_when_asked(batchnorm):
    from vision.embed import build_backbone

    torch.set_num_threads(1)
    photos = [Photo(_pattern(c, 10 * c + j), c) for c in range(3) for j in range(3)]
    cfg = TrainConfig(
        steps=3,
        head_warmup_steps=0,
        classes_per_batch=2,
        per_class=2,
        views=0,
        head_dim=8,
        batchnorm=batchnorm,
        train_from=14,
    )
    result = train(photos, config=cfg, pretrained_weights=None)
    before, _ = build_backbone("mobilenet_v2", weights=None, seed=cfg.seed)
    old, new = before.state_dict(), result.embedder.net.backbone.state_dict()
    frozen_block, trained_block = "features.13.conv.0.1.running_mean", "features.14.conv.0.1.running_mean"
    assert torch.equal(old[frozen_block], new[frozen_block])
    assert torch.equal(old[trained_block], new[trained_block]) == (batchnorm == "frozen")


def test_a_soup_averages_fine_tuning_runs_that_start_from_one_warmed_up_head():
    torch.set_num_threads(1)
    photos = [Photo(_pattern(c, 10 * c + j), c) for c in range(3) for j in range(3)]
    cfg = TrainConfig(
        steps=4, head_warmup_steps=5, classes_per_batch=2, per_class=2, views=2, head_dim=8, lr=1e-2, soup=3
    )
    result = train(photos, config=cfg, pretrained_weights=None)
    key = "features.14.conv.0.0.weight"
    runs = [backbone[key] for backbone, _ in result.members]
    assert len(runs) == 3 and not torch.equal(runs[0], runs[1])  # each run saw its own batches
    final = result.embedder.net.backbone.state_dict()
    assert torch.allclose(final[key], torch.stack(runs).mean(0), atol=1e-6)
    # a run alone is an embedder of its own; one run is the same training as without a soup
    assert result.embedder_with(result.members[0]).version != result.embedder.version
    alone = train(photos, config=replace(cfg, soup=1), pretrained_weights=None)
    assert not alone.members
    assert torch.allclose(alone.embedder.net.backbone.state_dict()[key], runs[0], atol=1e-6)
    assert result.timings["epochs"] == pytest.approx(3 * alone.timings["epochs"], abs=0.02)
    with pytest.raises(ValueError):
        TrainConfig(soup=0)


def test_cross_batch_memory_mines_anchors_against_earlier_batches():
    from vision.train import _loss_and_miner, _with_memory

    cfg = TrainConfig(classes_per_batch=2, per_class=2, head_dim=2, memory=8)
    loss_fn, miner = _loss_and_miner(cfg)
    step_loss = _with_memory(loss_fn, cfg)
    y = torch.tensor([0, 0, 1, 1])
    # an earlier batch: product 1's photos sat close to where product 0's are now
    first = torch.nn.functional.normalize(torch.tensor([[0.0, 1.0], [0.1, 1.0], [1.0, 0.1], [1.0, 0.2]]), dim=1)
    step_loss(first, y, miner(first, y))
    # this batch alone is well separated: the in-batch loss is 0, the memory's is not
    second = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [1.0, 0.05], [0.0, 1.0], [0.05, 1.0]]), dim=1)
    second.requires_grad_(True)
    assert float(loss_fn(second, y, miner(second, y)).detach()) == 0
    total = step_loss(second, y, miner(second, y))
    assert float(total.detach()) > 0.1
    total.backward()
    assert second.grad.abs().sum() > 0  # the anchors of this batch get the gradient

    photos = [Photo(_pattern(c, 10 * c + j), c) for c in range(3) for j in range(3)]
    small = replace(cfg, steps=3, head_warmup_steps=0, views=1, head_dim=8)
    result = train(photos, config=small, pretrained_weights=None)
    assert [step for step, _ in result.loss_history] == [1, 2, 3]
    with pytest.raises(ValueError):
        TrainConfig(memory=10)  # smaller than a batch of 64


def test_a_softplus_margin_still_pulls_on_triplets_past_the_margin():
    from vision.train import _loss_and_miner

    y = torch.tensor([0, 0, 1, 1])
    # every anchor's positive is much closer than its negative: no hinge violation
    emb = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0], [0.1, 1.0]]), dim=1)
    emb.requires_grad_(True)
    losses = {}
    for form in ("hinge", "softplus"):
        loss_fn, miner = _loss_and_miner(TrainConfig(margin=0.0, margin_loss=form))
        losses[form] = loss_fn(emb, y, miner(emb, y))
    assert float(losses["hinge"].detach()) == 0
    assert 0 < float(losses["softplus"].detach()) < math.log(2)  # below softplus(0): the triplets are satisfied
    (grad,) = torch.autograd.grad(losses["softplus"], emb)
    assert grad.abs().sum() > 0


def test_proxies_pull_towards_every_product_not_only_those_in_the_batch():
    from vision.train import _loss_and_miner, _with_proxies

    cfg = TrainConfig(classes_per_batch=2, per_class=2, head_dim=2, proxy_weight=1.0)
    loss_fn, miner = _loss_and_miner(cfg)
    # products 3, 7 and 9; the batch holds 3 and 7, and sits on product 9's proxy
    classes = np.array([3, 7, 9])
    centroids = np.array([[0.0, 1.0], [-1.0, 0.0], [1.0, 0.0]], dtype=np.float32)
    step_loss, proxies = _with_proxies(loss_fn, cfg, classes, centroids)
    assert torch.equal(proxies[0].detach(), torch.from_numpy(centroids))  # started at the centroids
    y = torch.tensor([3, 3, 7, 7])
    emb = torch.nn.functional.normalize(torch.tensor([[1.0, 0.05], [1.0, 0.0], [1.0, -0.05], [1.0, -0.1]]), dim=1)
    emb.requires_grad_(True)
    total = step_loss(emb, y, miner(emb, y))
    assert float(total.detach()) > float(loss_fn(emb, y, miner(emb, y)).detach())
    total.backward()
    assert proxies[0].grad[2].abs().sum() > 0  # product 9's proxy is pushed, though 9 is not in the batch
    # a step moves the photos away from product 9's proxy
    with torch.no_grad():
        moved = torch.nn.functional.normalize(emb - 0.1 * emb.grad, dim=1)
    before, after = (emb.detach() @ proxies[0][2].detach()).mean(), (moved @ proxies[0][2].detach()).mean()
    assert after < before

    photos = [Photo(_pattern(c, 10 * c + j), c) for c in (2, 5, 8) for j in range(3)]
    small = replace(cfg, steps=3, head_warmup_steps=5, views=1, head_dim=8, augment="strong")
    result = train(photos, config=small, pretrained_weights=None)
    assert [step for step, _ in result.loss_history] == [1, 2, 3]


def test_strong_augmentation_varies_light_and_shape_more_than_light():
    from vision.embed import Preprocess
    from vision.train_data import augmentation

    photo = Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 300, 3), dtype=np.uint8))
    spread = {}
    for strength in ("light", "strong"):
        torch.manual_seed(0)
        augment = augmentation(Preprocess(size=64, resize=73), crop_scale=1.0, strength=strength)
        means = [np.asarray(augment(photo), dtype=np.float32).mean() for _ in range(40)]
        spread[strength] = np.std(means)
        assert augment(photo).size == (64, 64)
    assert spread["strong"] > 1.2 * spread["light"]


def test_overrides_parse_as_their_fields_types():
    from vision.train import parse_overrides

    assert parse_overrides(["soup=2", "margin=0.3", "batchnorm=train"]) == {
        "soup": 2,
        "margin": 0.3,
        "batchnorm": "train",
    }
    for bad in (["colour=red"], ["steps"], ["steps=many"]):
        with pytest.raises(ValueError):
            parse_overrides(bad)


def _look_alike(label: int, seed: int) -> bytes:
    """Products 2g and 2g + 1: one colour, stripes of nearly the same frequency."""
    rng = np.random.default_rng(seed)
    group = label // 2
    base = np.array([(group * 80) % 256, (group * 150 + 60) % 256, (group * 40 + 120) % 256], np.float32)
    x = np.arange(96)[None, :, None]
    stripes = 60 * np.sin(x * (0.3 + 0.6 * group + 0.08 * (label % 2)))
    pixels = np.clip(base + stripes + rng.normal(0, 25, (96, 96, 3)), 0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "PNG")
    return out.getvalue()


@pytest.mark.weights
def test_neighbour_batches_pair_the_products_that_look_alike():
    torch.set_num_threads(1)
    photos = [Photo(_look_alike(c, 10 * c + j), c) for c in range(6) for j in range(3)]
    cfg = TrainConfig(
        steps=3,
        head_warmup_steps=5,
        classes_per_batch=2,
        per_class=2,
        views=2,
        head_dim=32,
        neighbour_share=1.0,
        neighbours=1,
    )
    result = train(photos, config=cfg)
    assert result.neighbours == {0: [1], 1: [0], 2: [3], 3: [2], 4: [5], 5: [4]}
    assert not train(photos, config=replace(cfg, neighbour_share=0.0)).neighbours
    with pytest.raises(ValueError):
        TrainConfig(neighbour_share=1.5)
