"""A job's documents from the service's own state (contract §14 "Surface"): the rows the
pipeline writes to ``JOBS_DATABASE.job_documents``, and the console's job page, which lists
them without querying the source collection (real nx-27017, Redis, worker, image server)."""

from __future__ import annotations

import re
from datetime import datetime

from bson import json_util
from pymongo import MongoClient, monitoring

from api import context as api_context
from images_service.jobs.documents import COLLECTION, JobDocument, JobDocuments
from images_service.jobs.store import JobStore
from tests.support.console import csrf_token
from tests.support.pipeline import KEY, api_client, source_db, wait_job

#: A document's heading on the job page (its id, linking to the document's page).
DOC_HEADING = r'<h3 id="doc-\d+" class="wrap"><a href="[^"]*">([^<]+)</a></h3>'


class Commands(monitoring.CommandListener):
    """Every command a client sends: (database, command name, command)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, dict]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.seen.append((event.database_name, event.command_name, dict(event.command)))

    def succeeded(self, event) -> None:
        pass

    def failed(self, event) -> None:
        pass

    def on(self, database: str) -> list[tuple[str, dict]]:
        return [(name, command) for db, name, command in self.seen if db == database]


def _row(job_id: str, name: str, source_id: object = None) -> JobDocument:
    source = name if source_id is None else source_id
    return JobDocument(job_id=job_id, document_id=str(source), source_id=json_util.dumps(source),
                       folder=f"serpy_db/hotels/{source}-x", status="completed", downloaded=1,
                       failed=0)


def test_rows_are_one_bulk_write_idempotent_typed_and_expire(make_settings) -> None:
    settings = make_settings()
    commands = Commands()
    client = MongoClient(settings.mongodb_uri, tz_aware=True, event_listeners=[commands])
    # The production branch (a TTL index: MongoDB's monitor deletes expired rows), forced on
    # nx-27017, which leaves them to the sweeper (images_service/jobs/expiry.py).
    repo = JobDocuments(client, settings.jobs_database, retention_days=3, ttl_by_server=True)
    rows = [_row("job-1", f"item{i}") for i in (10, 2, 1, 21, 3)]
    rows += [_row("job-1", "5", source_id=5), _row("job-1", "5", source_id="5"),
             _row("job-2", "item1")]

    # When the rows are written, then written again (a replayed message)
    repo.record(rows)
    repo.record(rows)

    # Then each call is one bulk write, the second one changing nothing
    updates = [c for name, c in commands.on(settings.jobs_database) if name == "update"]
    assert len(updates) == 2 and all(len(u["updates"]) == len(rows) for u in updates)
    coll = client[settings.jobs_database][COLLECTION]
    assert coll.count_documents({}) == len(rows)
    # the ids 5 and "5" are two documents, each with its type kept
    fives = sorted(r["source_id"] for r in coll.find({"job_id": "job-1", "document_id": "5"}))
    assert fives == ['"5"', "5"]
    # a page is read in natural order of the ids, through (job_id, sort_key)
    names = [r["document_id"] for r in repo.page("job-1", skip=0, limit=100)]
    assert names[:2] == ["5", "5"] and names[2:] == ["item1", "item2", "item3", "item10", "item21"]
    assert [r["document_id"] for r in repo.page("job-1", skip=3, limit=2)] == ["item2", "item3"]
    indexes = {tuple(i["key"]): i for i in coll.index_information().values()}
    assert (("job_id", 1), ("sort_key", 1)) in indexes
    assert indexes[(("retention.expire_at", 1),)]["expireAfterSeconds"] == 0
    # and the TTL date is a date (nx-27017 turns a top-level $set date into a string)
    row = coll.find_one({"job_id": "job-2"})
    assert isinstance(row["retention"]["expire_at"], datetime)
    assert (row["status"], row["downloaded"], row["failed"], row["folder"]) == (
        "completed", 1, 0, "serpy_db/hotels/item1-x")
    client.close()


def test_the_job_page_lists_finished_documents_without_reading_the_source(
        make_settings, start_worker, image_server, monkeypatch) -> None:
    # Given a collection job whose documents name no write-back field (STATUS_FIELD empty)
    settings = make_settings({"ALLOW_PRIVATE_NETWORKS": "true", "STATUS_FIELD": "",
                              "API_RATE_LIMIT": "100000/minute"})
    db = source_db(settings)
    db.surface_hotels.drop()
    names = ["item10", "item2", "item1", "item21", "item3"]
    db.surface_hotels.insert_many([
        {"_id": name, "name": f"Hotel {name}",
         "images": [image_server.url(f"/image/PNG/{name}-a"), image_server.url("/status/404")]}
        for name in names])
    start_worker(settings)
    rest = api_client(settings)
    job_id = rest.post("/api/v1/download/collection/serpy_db/surface_hotels").json["job_id"]
    assert wait_job(rest, job_id)["status"] == "completed"

    # Then the pipeline wrote one row per finished document
    rows = JobDocuments(MongoClient(settings.mongodb_uri), settings.jobs_database)
    found = {r["document_id"]: r for r in rows.page(job_id, skip=0, limit=100)}
    assert sorted(found) == sorted(names)
    assert {(r["status"], r["downloaded"], r["failed"]) for r in found.values()} == {
        ("partial", 1, 1)}
    assert found["item2"]["folder"] == "serpy_db/surface_hotels/item2-hotel-item2"
    assert found["item2"]["source_id"] == '"item2"'

    # When a signed-in console opens the job's page (every MongoDB command watched)
    commands = Commands()

    def watched(settings, *, timeout_ms: int = 5000, app: str = "test"):
        return MongoClient(settings.mongodb_uri, tz_aware=True, appname=app,
                           serverSelectionTimeoutMS=timeout_ms, event_listeners=[commands])

    monkeypatch.setattr(api_context, "mongo_client", watched)
    from api import create_app

    browser = create_app(settings).test_client()
    token = csrf_token(browser.get("/ui/sign-in").text)
    signed_in = browser.post("/ui/sign-in", data={"csrf_token": token, "api_key": KEY})
    assert signed_in.status_code == 303
    commands.seen.clear()
    page = browser.get(f"/ui/jobs/{job_id}")

    # Then it lists them in natural order, each with its thumbnail and failed image
    assert page.status_code == 200
    listed = re.findall(DOC_HEADING, page.text)
    assert listed == ["item1", "item2", "item3", "item10", "item21"]
    assert page.text.count("<img ") == 5 and page.text.count("http_404") >= 5
    # and not one command reached the source database
    assert commands.on("serpy_db") == []
    assert any(name == "find" and c.get("find") == COLLECTION
               for name, c in commands.on(settings.jobs_database))


def test_a_document_jobs_page_shows_its_document_before_it_finished(make_settings) -> None:
    # A document job shows its one document (read by _id) while nothing is finished yet
    settings = make_settings()
    source_db(settings).one_hotel.insert_one({"_id": "ritz", "name": "Ritz", "images": []})
    jobs = JobStore(MongoClient(settings.mongodb_uri), settings.jobs_database)
    job = jobs.create("document", "serpy_db", "one_hotel", document_id="ritz",
                      source={"id": json_util.dumps("ritz")})
    from api import create_app

    browser = create_app(settings).test_client()
    token = csrf_token(browser.get("/ui/sign-in").text)
    browser.post("/ui/sign-in", data={"csrf_token": token, "api_key": KEY})
    page = browser.get(f"/ui/jobs/{job['_id']}")
    assert page.status_code == 200
    assert re.findall(DOC_HEADING, page.text) == ["ritz"]
    assert "Nothing stored yet." in page.text
