"""Near-duplicates among one document's hashes (contract §18)."""

from __future__ import annotations

from images_service.content.duplicates import find_duplicates

A = 0x8F373714ACFCF4D0
#: A with the lowest 3, 4 and 5 bits flipped.
A3, A4, A5 = A ^ 0b111, A ^ 0b1111, A ^ 0b11111
B = ~A & ((1 << 64) - 1)  # 64 bits from A


def test_a_later_image_within_the_distance_points_at_the_earlier_one() -> None:
    assert find_duplicates([(1, A), (2, B), (3, A4)], 4) == {3: 1}


def test_the_distance_is_inclusive_and_configurable() -> None:
    assert find_duplicates([(1, A), (2, A5)], 4) == {}
    assert find_duplicates([(1, A), (2, A4)], 4) == {2: 1}
    assert find_duplicates([(1, A), (2, A4)], 3) == {}
    assert find_duplicates([(1, A), (2, A)], 0) == {2: 1}


def test_the_earliest_earlier_image_wins_and_order_is_by_index() -> None:
    # Given out of order: compared by index, so 2 is the first and 5 and 7 point at it.
    assert find_duplicates([(7, A3), (5, A), (2, A4)], 4) == {5: 2, 7: 2}


def test_a_chain_points_at_the_nearest_earlier_image_within_reach() -> None:
    # 3 is 8 bits from 1 (too far) but 4 from 2, itself a duplicate of 1.
    a8 = A ^ 0xFF
    assert find_duplicates([(1, A), (2, A4), (3, a8)], 4) == {2: 1, 3: 2}


def test_nothing_to_compare() -> None:
    assert find_duplicates([], 4) == {}
    assert find_duplicates([(1, A)], 64) == {}


def test_large_documents_compared_in_numpy_give_the_same_answer() -> None:
    import random

    from images_service.content import duplicates

    rng = random.Random(7)
    for size in (duplicates.NUMPY_FROM, 200):
        # Clusters of near hashes among unrelated ones, indexes shuffled and sparse.
        bases = [rng.getrandbits(64) for _ in range(size // 4)]
        values = [rng.choice(bases) ^ (1 << rng.randrange(64)) ^ (1 << rng.randrange(64))
                  if rng.random() < 0.6 else rng.getrandbits(64) for _ in range(size)]
        hashes = list(zip(rng.sample(range(1, 10 * size), size), values, strict=True))
        for bits in (0, 2, 4, 10):
            expected = {}
            earlier: list[tuple[int, int]] = []
            for index, value in sorted(hashes):
                match = next((i for i, v in earlier if bin(v ^ value).count("1") <= bits), None)
                if match is not None:
                    expected[index] = match
                earlier.append((index, value))
            assert find_duplicates(hashes, bits) == expected
            assert expected or bits < 4  # never vacuous where clusters are in reach
