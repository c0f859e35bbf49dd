"""`images-service reconcile` (contract §15) against a live api and a real worker: the job's
step runs in the worker (the scan actor), its downloads too; no listener runs, so the delete
and the insert below are changes the listener missed."""

from __future__ import annotations

import json

from tests.integration.test_cli import live_api  # noqa: F401 -- the fixture
from tests.support.pipeline import api_client, source_db


def _folders(settings) -> dict[str, list[str]]:
    root = settings.storage_path / "serpy_db" / "hotels"
    trash = settings.storage_path / ".trash" / "serpy_db" / "hotels"
    return {"tree": sorted(p.name for p in root.iterdir()) if root.exists() else [],
            "trash": sorted(p.name for p in trash.iterdir()) if trash.exists() else []}


def test_reconcile_dry_run_then_real_with_wait(live_api, start_worker, image_server,  # noqa: F811
                                               tmp_path) -> None:
    settings = live_api.settings
    hotels = source_db(settings).hotels
    hotels.insert_many([{"_id": f"h{i}", "name": f"Hotel {i}",
                         "images": [image_server.url(f"/image/JPEG/{i}")]} for i in range(2)])
    start_worker(settings)
    assert live_api.cli("download", "collection", "serpy_db", "hotels", "--wait",
                        cwd=tmp_path).returncode == 0
    # Changes made while no listener runs: a delete and an insert
    hotels.delete_one({"_id": "h0"})
    hotels.insert_one({"_id": "h2", "name": "Hotel 2",
                       "images": [image_server.url("/image/PNG/2")]})
    before = _folders(settings)
    assert before == {"tree": ["h0-hotel-0", "h1-hotel-1"], "trash": []}

    # A dry run, followed: exit 0, what it would do, nothing done
    dry = live_api.cli("reconcile", "serpy_db", "hotels", "--dry-run", "--wait", cwd=tmp_path)
    assert dry.returncode == 0, dry.stderr
    lines = dry.stdout.splitlines()
    job_id = lines[0].split()[1]
    assert lines[0] == f"job {job_id} pending (dry run)"
    assert ("reconcile (dry run): would have trashed 1 folders, would have downloaded 1 "
            "documents, would have removed 0 files") in lines
    assert "  serpy_db/hotels/h0-hotel-0" in lines and "  serpy_db/hotels/h2-hotel-2" in lines
    assert _folders(settings) == before
    job = api_client(settings).get(f"/api/v1/jobs/{job_id}").json
    assert (job["type"], job["dry_run"], job["status"]) == ("reconcile", True, "completed")

    # For real: the folder of the deleted document in the trash, the new one downloaded
    real = live_api.cli("reconcile", "serpy_db", "hotels", "--wait", cwd=tmp_path)
    assert real.returncode == 0, real.stderr
    assert ("reconcile: trashed 1 folders, downloaded 1 documents, removed 0 files"
            in real.stdout.splitlines())
    assert _folders(settings) == {"tree": ["h1-hotel-1", "h2-hotel-2"], "trash": ["h0-hotel-0"]}
    meta = json.loads((settings.storage_path / "serpy_db/hotels/h2-hotel-2/metadata.json")
                      .read_text())
    assert meta["summary"]["downloaded"] == 1
    assert "reconcile" in live_api.cli("--help").stdout
