"""A redriven dead letter is a fresh message: new broker id, full retry budget, no ETA."""

from __future__ import annotations

import dramatiq
import pytest

from images_service.errors import NotFound
from images_service.queueing.queues import check_queue, fresh_message


def test_fresh_message_resets_its_previous_life_and_keeps_the_rest():
    dead = dramatiq.Message(queue_name="images-download.DQ", actor_name="retry_image",
                            args=("job-1", {"plan": 1}, 2, 3), kwargs={}, message_id="m-1",
                            message_timestamp=1,
                            options={"redis_message_id": "old", "retries": 10, "eta": 5,
                                     "traceback": "Traceback…", "max_retries": 0})
    new_id, data = fresh_message(dead.encode(), "images-download")
    fresh = dramatiq.Message.decode(data)
    assert new_id != "old" and fresh.options == {"redis_message_id": new_id, "max_retries": 0}
    assert (fresh.queue_name, fresh.actor_name, fresh.args, fresh.message_id) == (
        "images-download", "retry_image", ("job-1", {"plan": 1}, 2, 3), "m-1")
    assert fresh.message_timestamp > 1


def test_only_the_service_queues_exist():
    check_queue("images-scan")
    with pytest.raises(NotFound) as info:
        check_queue("images-scan.XQ")
    assert info.value.code == "queue_not_found"
