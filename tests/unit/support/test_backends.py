"""TEST_REDIS_DB: the Redis DBs the test processes may claim (tests/support/backends.py)."""

from __future__ import annotations

import pytest

from tests.support.backends import DEFAULT_DBS, parse_test_redis_dbs


@pytest.mark.parametrize(("value", "dbs"), [
    ("", [14, 13, 12, 11, 10, 9, 8]),
    ("  ", DEFAULT_DBS),
    ("5", [5]),
    ("5,6,7,8", [5, 6, 7, 8]),
    ("8-11", [8, 9, 10, 11]),
    ("11-8", [11, 10, 9, 8]),
    (" 3 , 8 - 10 ", [3, 8, 9, 10]),
    ("5,5-7,6", [5, 6, 7]),  # each DB once, in the order first named
    ("0", [0]),
])
def test_a_number_a_list_or_a_range(value: str, dbs: list[int]) -> None:
    assert parse_test_redis_dbs(value) == dbs


@pytest.mark.parametrize("value", ["five", "5,", "-3", "8-", "8-11-12", "5;6", "1.5"])
def test_anything_else_is_refused_naming_the_variable_and_the_forms(value: str) -> None:
    with pytest.raises(ValueError, match=r"TEST_REDIS_DB=.*expected e\.g\. 5 or 5,6,7,8 or 8-11"):
        parse_test_redis_dbs(value)
