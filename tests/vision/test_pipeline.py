"""vision.pipeline: stages, box choice and override, coordinates, grouping, rerank hook.

Unit tests use a colour "embedder" (one-hot of the palette colour nearest to the image's
mean colour) and an index of exact one-hot vectors, so every answer is known.
"""

from __future__ import annotations

import functools
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vision.detect import Box, BoxChoice, NoDetector
from vision.imageio import ImageError
from vision.index import VectorIndex
from vision.pipeline import Hit, SearchConfig, SearchPipeline, crop, image_bytes

torch.set_num_threads(1)

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "datasets" / "grocery-store"
PALETTE = np.array([(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255), (255, 0, 255)], float)
RED, GREEN, BLUE = 0, 1, 2
PRODUCT = 100  # product of colour i is PRODUCT + i


class ColourEmbedder:
    version = "colour-test"
    dim = len(PALETTE)

    def __init__(self) -> None:
        self.seen_sizes: list[tuple[int, int]] = []

    def embed(self, images):
        out = np.zeros((len(images), self.dim), np.float32)
        for i, img in enumerate(images):
            self.seen_sizes.append(img.size)
            mean = np.asarray(img, float).reshape(-1, 3).mean(axis=0)
            out[i, np.argmin(((PALETTE - mean) ** 2).sum(axis=1))] = 1.0
        return out


class FixedDetector:
    """Returns the given boxes, expressed as fractions of whatever image it is shown."""

    name = "fixed"

    def __init__(self, *fractional: tuple[float, float, float, float, float], label: str = "bottle") -> None:
        self.fractional = fractional
        self.label = label

    def detect(self, image):
        w, h = image.size
        return [Box(a * w, b * h, c * w, d * h, s, self.label) for a, b, c, d, s in self.fractional]


def _index() -> tuple[VectorIndex, dict[int, int]]:
    """Two images per product: the exact colour direction (id 10*i) and a blend (10*i + 1)."""
    vectors, ids, to_product = [], [], {}
    eye = np.eye(len(PALETTE), dtype=np.float32)
    for i in range(len(PALETTE)):
        blend = 0.8 * eye[i] + 0.6 * eye[(i + 1) % len(PALETTE)]
        for j, v in enumerate((eye[i], blend / np.linalg.norm(blend))):
            vectors.append(v)
            ids.append(10 * i + j)
            to_product[10 * i + j] = PRODUCT + i
    return VectorIndex.build(np.stack(vectors).astype(np.float32), np.array(ids), version="colour-test"), to_product


def _photo(size=(2048, 1024)) -> Image.Image:
    """Blue background, a red square in the centre covering a quarter of the width."""
    w, h = size
    arr = np.zeros((h, w, 3), np.uint8)
    arr[:] = (0, 0, 255)
    arr[h // 4 : 3 * h // 4, 3 * w // 8 : 5 * w // 8] = (255, 0, 0)
    return Image.fromarray(arr)


@functools.lru_cache(maxsize=4)
def _upload() -> bytes:
    """The test photo as uploaded (PNG: lossless, so colours stay exact)."""
    return _png(_photo())


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


# A box confident and large enough for any sensible rule: the red square, exactly.
RED_SQUARE = (3 / 8, 1 / 4, 5 / 8, 3 / 4, 0.95)
ALWAYS_CROP = BoxChoice(w_center=0.3, w_score=0.5, w_area=0.2, min_score=0.0, min_area=0.0)


def _pipeline(detector=None, config=None, **kwargs) -> tuple[SearchPipeline, ColourEmbedder]:
    index, to_product = _index()
    embedder = ColourEmbedder()
    config = config or SearchConfig(max_side=1024, crop_pad=0.0, box_choice=ALWAYS_CROP, k=3, product_images=1)
    return SearchPipeline(detector, embedder, index, to_product, config, **kwargs), embedder


# --------------------------------------------------------------------------- search


def test_whole_image_without_detector_finds_the_background_product():
    pipe, _ = _pipeline(NoDetector())
    result = pipe.run(_upload())
    assert result.hits[0] == Hit(PRODUCT + BLUE, pytest.approx(1.0), 10 * BLUE, pytest.approx(1.0))
    assert result.box.label == "image" and len(result.boxes) == 1


def test_detected_box_is_cropped_and_finds_the_object():
    # given a detector that finds the red square
    pipe, embedder = _pipeline(FixedDetector(RED_SQUARE))
    # when searching with the uploaded 2048x1024 photo
    result = pipe.run(_upload())
    # then the crop (of the 1024x512 working image) is embedded and red comes first
    assert embedder.seen_sizes == [(256, 256)]
    # (magenta's blend image holds 0.6 red; the rest tie at 0 and go by product id)
    assert [h.product_id for h in result.hits] == [PRODUCT + RED, PRODUCT + 5, PRODUCT + GREEN]
    assert result.hits[0].image_id == 10 * RED and result.hits[0].score == pytest.approx(1.0)
    # and the boxes come back in the uploaded photo's pixels, whole image included
    assert result.image_size == (2048, 1024)
    assert result.box.as_tuple() == pytest.approx((768, 256, 1280, 768))
    assert any(b.label == "image" and b.as_tuple() == pytest.approx((0, 0, 2048, 1024)) for b in result.boxes)
    assert result.embedding.shape == (len(PALETTE),)


def test_hits_are_grouped_by_product_best_image_first():
    pipe, _ = _pipeline(NoDetector(), SearchConfig(k=6, product_images=1))
    hits = pipe.run(_upload()).hits
    products = [h.product_id for h in hits]
    assert len(products) == len(set(products)) == 6
    assert hits[0] == (PRODUCT + BLUE, pytest.approx(1.0), 10 * BLUE, pytest.approx(1.0))
    # the blend image of the product before blue (green: 0.8 green + 0.6 blue) ranks second
    assert hits[1] == (PRODUCT + GREEN, pytest.approx(0.6), 10 * GREEN + 1, pytest.approx(0.6))
    # scored by their 2 best images, blue is the mean of 1.0 and its blend's 0.8, green of 0.6 and 0
    pipe, _ = _pipeline(NoDetector(), SearchConfig(k=6, product_images=2))
    hits = pipe.run(_upload()).hits
    assert hits[:2] == [
        (PRODUCT + BLUE, pytest.approx(0.9), 10 * BLUE, pytest.approx(1.0)),
        (PRODUCT + GREEN, pytest.approx(0.3), 10 * GREEN + 1, pytest.approx(0.6)),
    ]


def test_caller_box_overrides_detection_and_is_scaled_to_the_working_image():
    # given a detector that would pick the whole red square
    pipe, embedder = _pipeline(FixedDetector(RED_SQUARE))
    # when the caller gives a box in uploaded pixels over the blue left part
    result = pipe.run(_upload(), box=(0, 0, 600, 1000))
    # then that box (halved: the photo was downscaled to 1024 px) is what gets embedded
    assert embedder.seen_sizes == [(300, 500)]
    assert result.hits[0].product_id == PRODUCT + BLUE
    assert result.box.label == "user" and result.box.as_tuple() == pytest.approx((0, 0, 600, 1000))


@pytest.mark.parametrize("box", [(0, 0, 3000, 100), (10, 10, 5, 50), (0, 0, 1), (0, 0, float("nan"), 5)])
def test_bad_caller_box_is_refused(box):
    pipe, _ = _pipeline(NoDetector())
    with pytest.raises(ValueError):
        pipe.run(_upload(), box=box)


def test_pil_input_and_bytes_input_agree():
    pipe, _ = _pipeline(FixedDetector(RED_SQUARE))
    photo = _photo()
    a, b = pipe.run(photo), pipe.run(_png(photo))
    assert a.hits == b.hits and a.box == b.box and a.image_size == b.image_size


def test_not_an_image_raises_image_error():
    pipe, _ = _pipeline(NoDetector())
    with pytest.raises(ImageError):
        pipe.run(b"definitely not a JPEG")


def test_timings_cover_every_stage():
    pipe, _ = _pipeline(FixedDetector(RED_SQUARE))
    t = pipe.run(image_bytes(_photo())).timings_ms
    assert set(t) == {"decode", "detect", "embed", "search", "rerank", "total"}
    assert all(v >= 0 for v in t.values())
    assert t["total"] >= t["decode"] + t["detect"] + t["embed"] + t["search"] - 1e-6


def test_reranker_hook_and_per_call_override():
    reverse = lambda hits: list(reversed(hits))  # noqa: E731
    pipe, _ = _pipeline(NoDetector(), reranker=reverse)
    plain = _pipeline(NoDetector())[0].run(_upload()).hits
    assert pipe.run(_upload()).hits == list(reversed(plain))
    assert pipe.run(_upload(), reranker=lambda hits: hits).hits == plain
    assert len(pipe.run(_upload(), k=2).hits) == 2


def test_pipeline_refuses_an_index_of_another_embedder_version():
    index, to_product = _index()
    index.version = "mobilenet_v2-000000000000"
    with pytest.raises(ValueError, match="version|vectors"):
        SearchPipeline(NoDetector(), ColourEmbedder(), index, to_product)


# --------------------------------------------------------------------------- box choice


@pytest.mark.parametrize(
    "detector",
    [
        FixedDetector((0.1, 0.05, 0.9, 0.95, 0.2)),  # large but doubtful
        FixedDetector((0.25, 0.2, 0.75, 0.8, 0.99)),  # sure, but 30% of the photo: a part, on close-ups
        FixedDetector((0.1, 0.05, 0.9, 0.95, 0.99), label="person"),  # the shopper's hand
    ],
)
def test_default_rule_keeps_the_whole_image(detector):
    # given the default configuration (the rule measured on review photos)
    pipe, embedder = _pipeline(detector, SearchConfig())
    # when the detector's only box is doubtful, small or a person
    result = pipe.run(_upload())
    # then the whole image, decoded at work_side, is searched, and the box is still reported
    assert result.box.label == "image" and embedder.seen_sizes == [(512, 256)]
    assert len(result.boxes) == 2


def test_a_small_crop_is_cut_from_the_photo_at_full_resolution():
    # given a rule that takes small boxes (10% of each side of a 2048x1024 upload)
    config = SearchConfig(box_choice=BoxChoice(min_score=0.3, min_area=0.0), crop_pad=0.0)
    pipe, embedder = _pipeline(FixedDetector((0.45, 0.45, 0.55, 0.55, 0.99)), config)
    # when it is chosen
    result = pipe.run(io.BytesIO(_upload()))
    # then the crop comes from the 1024-px decode (102x52), not the 512-px one (51x26)
    assert result.box.label != "image" and embedder.seen_sizes == [(102, 52)]


def test_default_rule_crops_a_confident_large_box_with_padding():
    pipe, embedder = _pipeline(FixedDetector((0.2, 0.05, 0.8, 0.95, 0.9)), SearchConfig())
    assert pipe.run(_upload()).box.label == "bottle"
    # a 307x230 box on the 512x256 working image, plus 25% a side, clipped at top and bottom
    assert embedder.seen_sizes == [(460, 256)]


def test_whole_image_cannot_be_an_ignored_label():
    with pytest.raises(ValueError):
        SearchConfig(ignore_labels=("image",))


def test_config_round_trips_through_a_dict():
    cfg = SearchConfig(max_side=800, detector="none", box_choice=BoxChoice(w_center=0.1), ignore_labels=(), k=4)
    assert SearchConfig.from_dict(cfg.to_dict()) == cfg
    for bad in ({"k": 0}, {"product_images": 0}):
        with pytest.raises(ValueError):
            SearchConfig(**bad)


def test_nanodet_size_reaches_nanodet_only():
    assert SearchConfig(nanodet_size=320).detector_options() == {"input_size": 320}
    assert SearchConfig(detector="none", nanodet_size=320).detector_options() == {}
    for bad in (300, 32, 0):
        with pytest.raises(ValueError, match="multiple of 32"):
            SearchConfig(nanodet_size=bad)


# --------------------------------------------------------------------------- crop helper


def test_crop_pads_and_clips_to_the_image():
    img = Image.new("RGB", (100, 80))
    assert crop(img, Box(20, 20, 60, 40, 0.9, "cup"), 0.0).size == (40, 20)
    assert crop(img, Box(20, 20, 60, 40, 0.9, "cup"), 0.25).size == (60, 30)  # 10 px / 5 px each side
    assert crop(img, (0, 0, 50, 80), 0.5).size == (75, 80)  # clipped at the left, top and bottom
    assert crop(img, Box(0, 0, 100, 80, 0.0, "image"), 0.3) is img
    assert crop(img, (10, 10, 10.2, 10.2)).size == (1, 1)  # never empty
    assert crop(img, (99.8, 79.8, 100, 80)).size == (1, 1)


# --------------------------------------------------------------------------- real weights


@pytest.mark.weights
def test_catalog_photo_finds_its_product_with_real_models():
    # given the catalog images of a handful of products, indexed with MobileNetV2
    from vision.detect import make_detector
    from vision.embed import TorchvisionEmbedder

    if not SHARED.is_dir():
        pytest.skip("shared dataset not present")
    embedder = TorchvisionEmbedder("mobilenet_v2")
    keys = sorted(p.name for p in (SHARED / "catalog").iterdir())[::9][:8]
    photos = [Image.open(next((SHARED / "catalog" / k).iterdir())).convert("RGB") for k in keys]
    index = VectorIndex.build(embedder.embed(photos), np.arange(len(keys)), version=embedder.version)
    pipe = SearchPipeline(make_detector("nanodet"), embedder, index, {i: i for i in range(len(keys))}, SearchConfig())
    for i, photo in enumerate(photos):
        # when a mirrored, re-compressed copy, upscaled like a phone photo, is searched
        upload = photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT).resize((640, 640))
        result = pipe.run(image_bytes(upload, quality=70))
        # then its product comes first
        assert result.hits[0].product_id == i, (keys[i], result.hits[:3], result.box)
