"""FetchOnce's claims on the real Redis (contract §16: each URL fetched once, across jobs)."""

from __future__ import annotations

import time

import redis
from pymongo import MongoClient

from images_service.download.fetch_once import DONE, FetchOnce
from images_service.download.url_index import UrlIndex

URL = "https://cdn.example.com/logo.png"


def _fetch_once(make_settings) -> FetchOnce:
    settings = make_settings({})
    client = redis.Redis.from_url(settings.redis_url)
    index = UrlIndex(MongoClient(settings.mongodb_uri), settings.jobs_database)
    return FetchOnce(client, index, settings)


def test_a_url_stored_by_one_job_is_not_granted_to_another(make_settings) -> None:
    fetch_once = _fetch_once(make_settings)
    try:
        # Given job A's download that claimed the URL and stored it
        token = fetch_once.claim(URL, "isv:job:A")
        assert token not in (None, DONE)
        assert fetch_once.claim(URL, "isv:job:B") is None  # busy while A downloads
        fetch_once.release(URL, token, job_key="isv:job:A", stored=True)
        # When job B, which looked in the index before A stored it, claims the URL
        again = fetch_once.claim(URL, "isv:job:B")
        # Then it is told to look again and copy, not given a second request
        assert again == DONE
        assert fetch_once.claim(URL) == DONE
        # And a document waiting on A's claim stops waiting at once
        started = time.monotonic()
        fetch_once.wait(URL, timeout_s=5)
        assert time.monotonic() - started < 1
    finally:
        fetch_once.close()


def test_a_failed_download_frees_the_url_for_the_next_one(make_settings) -> None:
    fetch_once = _fetch_once(make_settings)
    try:
        token = fetch_once.claim(URL, "isv:job:A")
        fetch_once.release(URL, token, job_key="isv:job:A", stored=False)
        # Nothing was stored: the next download may request it
        assert fetch_once.claim(URL, "isv:job:B") not in (None, DONE)
    finally:
        fetch_once.close()


def test_claims_released_together_answer_like_one_by_one(make_settings) -> None:
    # (the URL index writer releases a batch's claims in one round trip)
    fetch_once = _fetch_once(make_settings)
    other = URL.replace("logo", "banner")
    try:
        stored, failed = fetch_once.claim(URL, "isv:job:A"), fetch_once.claim(other, "isv:job:A")
        fetch_once.release_many([(URL, stored, "isv:job:A", True),
                                 (other, failed, "isv:job:A", False)])
        assert fetch_once.claim(URL, "isv:job:B") == DONE  # stored: copy, no second request
        assert fetch_once.claim(other, "isv:job:B") not in (None, DONE)  # free again
    finally:
        fetch_once.close()
