"""Job progress in Redis (images_service.jobs.progress): exactly-once counts in one hash per job,
and a job's state, once removed, never recreated by a late message."""

from __future__ import annotations

import redis

from images_service.jobs.progress import ProgressTracker


def _tracker(redis_url: str) -> tuple[ProgressTracker, redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    return ProgressTracker(client), client


def test_counts_are_taken_once_however_often_steps_replay(redis_url):
    tracker, client = _tracker(redis_url)
    tracker.start("j1")
    tracker.plan("j1", [("db/c/a", 3), ("db/c/b", 0)])
    tracker.plan("j1", [("db/c/a", 3)])  # a replayed scan batch
    assert tracker.image_done("j1", "db/c/a", [(1, "downloaded"), (2, "downloaded")]) is False
    # Progress moves image by image, before the document is finished
    assert tracker.current("j1").as_job_progress()["images_downloaded"] == 2
    # replayed (even with another outcome): still 2 of 3, counted once
    assert tracker.image_done("j1", "db/c/a", [(2, "failed")]) is False
    assert tracker.image_done("j1", "db/c/a", [(3, "failed"), (40, "skipped")]) is True
    assert tracker.image_done("j1", "db/c/a", [(1, "downloaded")]) is True  # a replay finishes
    first, progress = tracker.finalize("j1", "db/c/a")
    again, _ = tracker.finalize("j1", "db/c/a")
    assert (first, again) == (True, False)
    _, progress = tracker.finalize("j1", "db/c/b")
    assert progress.as_job_progress() == {
        "documents_total": 2, "documents_done": 2, "images_total": 3,
        "images_downloaded": 2, "images_skipped": 1, "images_failed": 1}
    assert not progress.complete()  # the scan may still plan documents
    assert tracker.mark_scan_done("j1").complete()
    assert tracker.save_checkpoint("j1", '{"$oid": "0123456789abcdef01234567"}', 500)
    assert tracker.checkpoint("j1") == ('{"$oid": "0123456789abcdef01234567"}', 500)
    # Everything lives in one hash that carries the job's hash tag.
    assert [k.decode() for k in client.scan_iter("*j1*")] == ["isv:job:{j1}"]


def test_after_forget_no_step_recreates_the_job_state(redis_url):
    tracker, client = _tracker(redis_url)
    tracker.start("j2")
    tracker.plan("j2", [("db/c/a", 2)])
    tracker.forget("j2")  # the job ended (cancelled from the API, failed, completed)
    assert tracker.plan("j2", [("db/c/b", 1)]) is None
    assert tracker.image_done("j2", "db/c/a", [(1, "downloaded"), (2, "failed")]) is False
    assert tracker.finalize("j2", "db/c/a") == (False, None)
    assert tracker.mark_scan_done("j2") is None
    assert tracker.save_checkpoint("j2", "1", 1) is False
    assert tracker.current("j2") is None
    assert list(client.scan_iter("*j2*")) == []
