"""Progress moves image by image (issue: operator experience): a running job's API view shows
the images of every document recorded so far, not only those of finished messages."""

from __future__ import annotations

import threading
import time

from tests.support.pipeline import Rig, source_db


def test_a_running_jobs_progress_counts_each_recorded_document(make_settings, image_server):
    settings = make_settings({"ALLOW_PRIVATE_NETWORKS": "true", "API_RATE_LIMIT": "100000/minute",
                              "MAX_CONCURRENT_DOWNLOADS": "16"})
    source_db(settings).hotels.drop()
    rig = Rig(settings, image_server)
    try:
        # Given one message with a fast document of 3 images and a slow one of 2
        fast = [image_server.url(f"/image/JPEG/live-fast{n}") for n in range(3)]
        slow = [image_server.url(f"/image/PNG/live-slow{n}?delay=3") for n in range(2)]
        rig.db.hotels.insert_many([{"_id": "a", "name": "A", "images": fast},
                                   {"_id": "b", "name": "B", "images": slow}])
        job_id = rig.client.post("/api/v1/download/collection/serpy_db/hotels").json["job_id"]
        rig.pipeline.scan(job_id)
        (args,) = [a for a in rig.messages("download_documents", job_id)]
        assert len(args[1]) == 2

        # When the message runs
        worker = threading.Thread(target=rig.pipeline.download_documents, args=args)
        worker.start()
        try:
            # Then the job shows the fast document's images while the slow one downloads
            seen = None
            deadline = time.monotonic() + 2.5
            while time.monotonic() < deadline and worker.is_alive():
                seen = rig.job(job_id)["progress"]
                if seen["images_downloaded"] == 3:
                    break
                time.sleep(0.05)
            assert seen is not None and seen["images_downloaded"] == 3, seen
            assert worker.is_alive()  # the message has not finished yet
        finally:
            worker.join()
        done = rig.job(job_id)
        assert done["status"] == "completed" and done["progress"]["images_downloaded"] == 5
    finally:
        rig.close()
