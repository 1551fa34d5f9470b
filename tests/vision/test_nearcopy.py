"""vision.nearcopy: exact ground truth on synthetic arrays."""

import numpy as np
from PIL import Image, ImageOps

from vision.nearcopy import (
    TRANSFORMS,
    CopyPolicy,
    closest,
    hamming,
    hashes_to_uint64,
    matches,
    mirror_phash_hex,
    phash_hex,
)

POLICY = CopyPolicy(max_hash_distance=8, min_similarity=0.9)


def test_hamming_counts_differing_bits():
    assert hamming(0b1011, np.array([0b0001, 0b1011, 0], dtype=np.uint64)).tolist() == [2, 0, 3]
    assert hamming(np.uint64(2**64 - 1), np.array([0], dtype=np.uint64)).tolist() == [64]


def test_the_mirrored_hash_finds_a_mirror_image():
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).resize((256, 256), Image.BILINEAR)
    stored = hashes_to_uint64([phash_hex(img)])
    mirrored = ImageOps.mirror(img)
    assert hamming(int(phash_hex(mirrored), 16), stored)[0] > 8
    ev = closest(
        phash=int(phash_hex(mirrored), 16),
        mirror_phash=int(mirror_phash_hex(mirrored), 16),
        vectors=None,
        candidate_hashes=stored,
        candidate_vectors=None,
    )
    assert ev.hash_distance == 0 and ev.hash_mirrored


def test_closest_prefers_a_candidate_both_measures_agree_on():
    # candidate 0: closest hash only; candidate 1: a bit further by hash but also by far the closest vector
    hashes = np.array([0b1, 0b111], dtype=np.uint64)
    vectors = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    query = np.array([[0.1, 0.995]], dtype=np.float32)
    plain = closest(phash=0, mirror_phash=None, vectors=query, candidate_hashes=hashes, candidate_vectors=vectors)
    assert plain.hash_index == 0 and plain.similarity_index == 1
    both = closest(
        phash=0, mirror_phash=None, vectors=query, candidate_hashes=hashes, candidate_vectors=vectors, policy=POLICY
    )
    assert both.hash_index == both.similarity_index == 1 and both.hash_distance == 3


def test_matches_is_an_or_of_hash_and_vector():
    hashes = np.array([0, 2**40 - 1, 2**40 - 1], dtype=np.uint64)
    vectors = np.array([[0.0, 1.0], [1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    hit = matches(phash=0, mirror_phash=0, vectors=np.array([[1.0, 0.0]], np.float32), candidate_hashes=hashes,
                  candidate_vectors=vectors, policy=POLICY)  # fmt: skip
    assert hit.tolist() == [True, True, False]


def test_every_transform_returns_an_rgb_image():
    img = Image.new("RGB", (120, 90), (10, 200, 30))
    for name, transform in TRANSFORMS.items():
        out = transform(img)
        assert out.mode == "RGB" and min(out.size) >= 8, name
