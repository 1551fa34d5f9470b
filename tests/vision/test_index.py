"""vision.index on seeded synthetic vectors whose neighbours are known by construction."""

from __future__ import annotations

import os

import faiss
import numpy as np
import pytest

from tests.vision.conftest import D, exact_topk, unit
from vision.index import (
    FLAT_MAX,
    BinaryVectorIndex,
    IndexCorrupt,
    VectorIndex,
    binarize,
    choose_binary_factory,
    choose_factory,
    group_by_product,
    load_index,
)

pytestmark = pytest.mark.usefixtures("faiss_one_thread")


# ---------------------------------------------------------------------------- factories


@pytest.mark.parametrize("n", [0, 1_000, FLAT_MAX - 1])
def test_small_catalogs_get_exact_flat(n):
    assert choose_factory(n, 256) == "IDMap2,Flat"


@pytest.mark.parametrize("n", [FLAT_MAX, 200_000, 1_000_000, 3_000_000])
def test_large_catalogs_get_ivf_flat_with_nlist_about_4_sqrt_n(n):
    factory = choose_factory(n, 256)
    assert factory.startswith("IVF") and factory.endswith(",Flat")
    nlist = int(factory[3:].split(",")[0])
    assert 2 * np.sqrt(n) <= nlist <= 16 * np.sqrt(n)
    assert nlist * 39 <= n  # enough points to train every centroid


def test_very_large_catalogs_get_compressed_codes():
    assert choose_factory(100_000_000, 256) == "OPQ64_128,IVF32768,PQ64"
    faiss.index_factory(256, choose_factory(100_000_000, 256), faiss.METRIC_INNER_PRODUCT)  # a valid string
    assert choose_binary_factory(1000, 256) == "BFlat"
    assert choose_binary_factory(10_000_000, 256).startswith("BIVF")


# ------------------------------------------------------------------------------ search


def test_flat_returns_the_exact_neighbours(data):
    # given a Flat index over primary keys
    db, ids, queries, nearest = data
    index = VectorIndex.build(db, ids)
    assert index.factory == "IDMap2,Flat"
    # when searching
    scores, found = index.search(queries, 10)
    # then the constructed nearest neighbour comes first, and the top 10 is numpy's
    assert scores.dtype == np.float32 and found.dtype == np.int64 and found.shape == (50, 10)
    np.testing.assert_array_equal(found[:, 0], nearest)
    np.testing.assert_array_equal(found, exact_topk(db, ids, queries, 10))
    np.testing.assert_allclose(scores, np.sort(queries @ db.T, axis=1)[:, ::-1][:, :10], atol=1e-5)
    assert (np.diff(scores, axis=1) <= 1e-6).all()


def test_ivf_visiting_every_list_equals_flat(data, ivf):
    db, ids, queries, _ = data
    flat_scores, flat_ids = VectorIndex.build(db, ids).search(queries, 10)
    ivf.nprobe = ivf.nlist
    scores, found = ivf.search(queries, 10)
    np.testing.assert_array_equal(found, flat_ids)
    np.testing.assert_allclose(scores, flat_scores, atol=1e-5)


def test_missing_results_are_minus_one(data):
    db, ids, queries, _ = data
    index = VectorIndex.build(db[:3], ids[:3])
    scores, found = index.search(queries[:2], 5)
    assert (found[:, 3:] == -1).all() and np.isneginf(scores[:, 3:]).all()
    assert sorted(found[0, :3]) == sorted(ids[:3])
    empty = VectorIndex.build(db[:0], ids[:0])
    scores, found = empty.search(queries[:2], 3)
    assert (found == -1).all() and empty.ntotal == 0


# ------------------------------------------------------------------ add / remove / replace


@pytest.mark.parametrize("factory", ["IDMap2,Flat", "IVF16,Flat"])
def test_remove_then_add_back(data, factory):
    db, ids, queries, nearest = data
    index = VectorIndex.build(db, ids, factory=factory)
    if index.is_ivf:
        index.nprobe = index.nlist  # exact, so results are comparable
    # when the nearest images are removed (plus one unknown id)
    removed = index.remove(np.append(nearest[:5], 999_999))
    # then they are gone from the index and from every result
    assert removed == 5 and index.ntotal == 2995
    assert sorted(index.ids().tolist()) == sorted(set(ids.tolist()) - set(nearest[:5].tolist()))
    found = index.search(queries, 20)[1]
    assert not np.isin(found, nearest[:5]).any()
    assert index.remove(nearest[:5]) == 0
    # and adding them back restores the exact answers
    rows = np.flatnonzero(np.isin(ids, nearest[:5]))
    index.add(db[rows], ids[rows])
    assert index.ntotal == 3000
    np.testing.assert_array_equal(index.search(queries, 1)[1][:, 0], nearest)


@pytest.mark.parametrize("factory", ["IDMap2,Flat", "IVF16,Flat"])
def test_adding_an_existing_id_replaces_its_vector(data, factory):
    db, ids, queries, nearest = data
    index = VectorIndex.build(db, ids, factory=factory)
    if index.is_ivf:
        index.nprobe = index.nlist
    # when image nearest[0] gets the vector that query 1 is near
    index.add(queries[1:2].copy(), nearest[:1])
    # then the count is unchanged, the new vector answers for that id, the old one not
    assert index.ntotal == 3000
    scores, found = index.search(queries[:2], 1)
    assert found[1, 0] == nearest[0] and scores[1, 0] == pytest.approx(1.0, abs=1e-5)
    assert found[0, 0] != nearest[0]
    assert (index.search(queries[1:2], 3)[1] == nearest[0]).sum() == 1  # no stale copy


# --------------------------------------------------------------------------- persistence


def test_save_load_roundtrip_keeps_results_version_and_nprobe(tmp_path, data, ivf):
    _, _, queries, _ = data
    ivf.nprobe = 3
    path = tmp_path / "images.faiss"
    ivf.save(path)
    ivf.save(path)  # overwriting goes through the same temp + rename
    assert os.listdir(tmp_path) == ["images.faiss"]  # no temp file left behind
    loaded = VectorIndex.load(path)
    assert (loaded.version, loaded.factory, loaded.nprobe, loaded.ntotal) == ("emb-v1", "IVF16,Flat", 3, 3000)
    for a, b in zip(loaded.search(queries, 10), ivf.search(queries, 10)):
        np.testing.assert_array_equal(a, b)
    assert loaded.serialized_size() == ivf.serialized_size() < path.stat().st_size
    assert loaded.remove(np.array([100, 107])) == 2  # the id map survived the trip too


def test_failed_save_keeps_the_old_file(tmp_path, data, ivf, monkeypatch):
    # given a saved index
    path = tmp_path / "images.faiss"
    ivf.save(path)
    before = path.read_bytes()

    # when the next save dies half-way through writing the payload
    def broken_write(index, writer):
        faiss.write_index(faiss.IndexFlatIP(D), writer)  # some bytes reach the temp file
        raise OSError("disk full")

    monkeypatch.setattr(VectorIndex, "_write", staticmethod(broken_write))
    with pytest.raises(OSError):
        VectorIndex.build(data[0][:10], data[1][:10]).save(path)

    # then readers still get the old index, and no temp file is left behind
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["images.faiss"]
    assert load_index(path).ntotal == 3000


def _damaged(path, how: str) -> None:
    raw = bytearray(path.read_bytes())
    if how == "truncated":
        raw = raw[: len(raw) // 2]
    elif how == "last byte cut":
        raw = raw[:-1]
    elif how == "payload flipped":
        raw[len(raw) // 3] ^= 0x01
    elif how == "metadata flipped":
        raw[raw.rindex(b'"version"') + 3] ^= 0x20
    elif how == "checksum flipped":
        raw[-20] ^= 0x80
    elif how == "empty":
        raw = b""
    elif how == "not an index":
        raw = bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8))
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize(
    "how",
    ["truncated", "last byte cut", "payload flipped", "metadata flipped", "checksum flipped", "empty", "not an index"],
)
def test_damaged_file_raises_index_corrupt(tmp_path, ivf, how):
    path = tmp_path / "images.faiss"
    ivf.save(path)
    _damaged(path, how)
    with pytest.raises(IndexCorrupt):
        load_index(path)


def test_load_index_tells_the_kinds_apart(tmp_path, data):
    db, ids, _, _ = data
    BinaryVectorIndex.build(db, ids, version="bin-v1").save(tmp_path / "b")
    VectorIndex.build(db, ids).save(tmp_path / "f")
    assert isinstance(load_index(tmp_path / "b"), BinaryVectorIndex)
    assert isinstance(load_index(tmp_path / "f"), VectorIndex)
    with pytest.raises(ValueError, match="binary"):
        VectorIndex.load(tmp_path / "b")


# -------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "bad",
    [
        lambda q: q.astype(np.float64),
        lambda q: q[:, :-1].copy(),
        lambda q: q[0],
        lambda q: q * 2,  # not L2-normalised
        lambda q: np.where(np.arange(D) == 0, np.nan, q).astype(np.float32),
        lambda q: q.tolist(),
    ],
    ids=["float64", "wrong dim", "1-D", "unnormalised", "nan", "list"],
)
def test_bad_vectors_raise(data, ivf, bad):
    _, _, queries, _ = data
    with pytest.raises(ValueError):
        ivf.search(bad(queries), 5)
    with pytest.raises(ValueError):
        ivf.add(bad(queries), np.arange(len(queries)))


@pytest.mark.parametrize(
    "ids", [np.arange(49), np.zeros(50, np.int64), -np.arange(1, 51), np.arange(50.0)],
    ids=["short", "duplicates", "negative", "float"],
)  # fmt: skip
def test_bad_ids_raise(data, ivf, ids):
    _, _, queries, _ = data
    with pytest.raises(ValueError):
        ivf.add(queries, ids)


def test_bad_k_and_nprobe_raise(data, ivf):
    _, _, queries, _ = data
    with pytest.raises(ValueError):
        ivf.search(queries, 0)
    with pytest.raises(ValueError):
        ivf.nprobe = ivf.nlist + 1
    with pytest.raises(ValueError):
        VectorIndex.build(data[0], data[1]).nprobe = 4  # Flat has no lists


# ------------------------------------------------------------------------------ binary

BITS = 256


@pytest.fixture(scope="module")
def embeddings():
    """256-d vectors: enough sign bits that no two codes collide."""
    return unit(np.random.default_rng(5).standard_normal((2000, BITS))), np.arange(2000, dtype=np.int64) + 1


def test_binary_index_finds_exact_duplicates(embeddings):
    db, ids = embeddings
    index = BinaryVectorIndex.build(db, ids, version="bin-v1")
    assert index.dim == BITS and index.factory == "BFlat"
    # float input is binarised; packed input is taken as is
    for queries in (db[[5, 17, 1999]], binarize(db[[5, 17, 1999]])):
        scores, found = index.search(queries, 3)
        np.testing.assert_array_equal(found[:, 0], ids[[5, 17, 1999]])
        np.testing.assert_array_equal(scores[:, 0], 1.0)
        assert (scores[:, 1:] < 0.75).all()  # unrelated vectors agree on ~half the bits


def test_binary_near_duplicate_and_add_remove(tmp_path, embeddings):
    db, ids = embeddings
    codes = binarize(db)
    index = BinaryVectorIndex.build(codes, ids)
    # a re-upload with 2 of 256 bits flipped is found first, at similarity 1 - 2/256
    query = codes[[42]].copy()
    query[0, 0] ^= 0b1000_0001
    scores, found = index.search(query, 1)
    assert found[0, 0] == ids[42] and scores[0, 0] == pytest.approx(1 - 2 / BITS)
    # replace, remove, persist
    index.add(query, ids[[42]])
    assert index.ntotal == 2000 and index.search(query, 1)[0][0, 0] == 1.0
    assert index.remove(ids[[42]]) == 1 and ids[42] not in index.search(query, 5)[1]
    index.save(tmp_path / "b")
    loaded = BinaryVectorIndex.load(tmp_path / "b")
    np.testing.assert_array_equal(loaded.search(codes[:9], 4)[1], index.search(codes[:9], 4)[1])
    with pytest.raises(ValueError):
        index.search(codes[:, :16], 1)  # 128 bits, not 256
    with pytest.raises(ValueError):
        index.search(db[:, :128].copy(), 1)


def test_binary_ivf_with_every_list_equals_binary_flat(embeddings):
    db, ids = embeddings
    flat = BinaryVectorIndex.build(db, ids)
    ivf = BinaryVectorIndex.build(db, ids, factory="BIVF8")
    ivf.nprobe = 8
    assert ivf.remove(ids[:10]) == 10 and flat.remove(ids[:10]) == 10
    np.testing.assert_array_equal(ivf.search(db[:20], 1)[0], flat.search(db[:20], 1)[0])


# ----------------------------------------------------------------- grouping and tuning


def test_group_by_product_keeps_each_products_best_image():
    # given hits for images of three products, best first, with padding and a stale image
    scores = np.array([[0.95, 0.93, 0.90, 0.90, 0.85, 0.80, -np.inf]], np.float32)
    ids = np.array([[11, 12, 21, 31, 99, 22, -1]])
    image_to_product = {11: 1, 12: 1, 21: 2, 22: 2, 31: 3}  # 99 was deleted since
    # when grouped
    grouped = group_by_product(scores, ids, image_to_product, k=10)
    # then each product appears once, at its best image; ties go to the lower product id
    assert grouped == [
        (1, pytest.approx(0.95), 11, pytest.approx(0.95)),
        (2, pytest.approx(0.90), 21, pytest.approx(0.90)),
        (3, pytest.approx(0.90), 31, pytest.approx(0.90)),
    ]
    assert group_by_product(scores[0], ids[0], image_to_product.get, k=2) == grouped[:2]
    assert group_by_product(scores, np.full_like(ids, -1), image_to_product, k=3) == []


def test_group_by_product_can_score_a_product_by_its_best_few_images():
    # given one lucky photo of product 1 and three close photos of product 2, not sorted
    scores = np.array([0.80, 0.95, 0.88, 0.70, 0.90], np.float32)
    ids = np.array([22, 11, 21, 12, 23])
    image_to_product = {11: 1, 12: 1, 21: 2, 22: 2, 23: 2}
    # when a product scores as the mean of its 2 best images
    grouped = group_by_product(scores, ids, image_to_product, k=10, images_per_product=2)
    # then product 2 (0.90, 0.88) ranks above product 1 (0.95, 0.70), each at its best image
    assert grouped == [
        (2, pytest.approx(0.89), 23, pytest.approx(0.90)),
        (1, pytest.approx(0.825), 11, pytest.approx(0.95)),
    ]
    # a product with fewer hits than that scores as the mean of those it has
    assert group_by_product(scores[:2], ids[:2], image_to_product, k=10, images_per_product=3) == [
        (1, pytest.approx(0.95), 11, pytest.approx(0.95)),
        (2, pytest.approx(0.80), 22, pytest.approx(0.80)),
    ]
    with pytest.raises(ValueError, match="images_per_product"):
        group_by_product(scores, ids, image_to_product, k=10, images_per_product=0)
