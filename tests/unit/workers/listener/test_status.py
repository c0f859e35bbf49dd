"""Reading the cluster time of a resume token (the listener page's lag)."""

from __future__ import annotations

from workers.listener.status import StreamCheckpoint, token_time


def test_a_mongodb_token_starts_with_its_cluster_time():
    # 82 = KeyString Timestamp, then seconds (0x6567A1B0) and increment (1)
    token = {"_data": "826567A1B0000000012B022C0100296E5A1004"}
    assert token_time(token) == 0x6567A1B0


def test_tokens_without_a_time_give_none():
    for token in ({"_data": "nx:17"}, {"_data": "82XYZ"}, {"_data": 5}, {}, None, "82"):
        assert token_time(token) is None, token


def test_age_and_lag_are_never_negative():
    checkpoint = StreamCheckpoint("db.c", epoch=1, saved_at=100.0, token_time=90.0)
    assert (checkpoint.age_s(105.0), checkpoint.lag_s(105.0)) == (5.0, 15.0)
    assert (checkpoint.age_s(99.0), checkpoint.lag_s(80.0)) == (0.0, 0.0)
    assert StreamCheckpoint("db.c", None, None, None).lag_s(1.0) is None
