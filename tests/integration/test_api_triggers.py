"""REST triggers and job endpoints: every status code of contract §7 (no worker needed)."""

from __future__ import annotations

import pytest
from bson import ObjectId

from images_service.dev.embedded import free_port
from tests.support.pipeline import api_client, source_db


@pytest.fixture
def setup(make_settings):
    settings = make_settings()
    db = source_db(settings)
    db.hotels.drop()
    oid = ObjectId()
    db.hotels.insert_many([
        {"_id": oid, "name": "A", "images": ["http://example.invalid/a.jpg"]},
        {"_id": "str-id", "name": "B"},
        {"_id": 42, "name": "C"},
    ])
    return settings, api_client(settings), oid


def test_collection_trigger_202_with_location(setup):
    _, client, _ = setup
    r = client.post("/api/v1/download/collection/serpy_db/hotels",
                    json={"filter": {"name": {"$in": ["A", "B"]}}, "limit": 5, "force": True,
                          "image_fields": ["images", "media.gallery"]})
    assert r.status_code == 202
    body = r.json
    assert body["status"] == "pending"
    assert body["links"] == {"self": f"/api/v1/jobs/{body['job_id']}"}
    assert r.headers["Location"] == body["links"]["self"]
    job = client.get(body["links"]["self"]).json
    assert job["type"] == "collection" and job["filter"] == {"name": {"$in": ["A", "B"]}}
    assert job["limit"] == 5 and job["force"] is True
    assert job["created_at"].endswith("Z") and job["started_at"] is None
    assert job["progress"]["documents_total"] == 0 and job["errors"] == []


@pytest.mark.parametrize("raw,expected", [(None, "oid"), ("str-id", "str-id"), ("42", "42")])
def test_document_trigger_resolves_ids_in_contract_order(setup, raw, expected):
    _, client, oid = setup
    raw = raw or str(oid)
    r = client.post(f"/api/v1/download/document/serpy_db/hotels/{raw}")
    assert r.status_code == 202
    job = client.get(r.headers["Location"]).json
    assert job["type"] == "document"
    assert job["document_id"] == (str(oid) if expected == "oid" else expected)


def test_batch_trigger(setup):
    _, client, _ = setup
    r = client.post("/api/v1/download/batch", json={"database": "serpy_db", "collection": "hotels",
                                                    "filter": {"name": "A"}, "limit": 50})
    assert r.status_code == 202
    job = client.get(r.headers["Location"]).json
    assert (job["type"], job["limit"], job["filter"]) == ("batch", 50, {"name": "A"})


@pytest.mark.parametrize("path,body,code", [
    ("/api/v1/download/document/serpy_db/hotels/0123456789abcdef01234567", None, "document_not_found"),
    ("/api/v1/download/document/serpy_db/nowhere/x1", None, "collection_not_found"),
    ("/api/v1/download/collection/serpy_db/nowhere", None, "collection_not_found"),
    ("/api/v1/download/collection/no_such_db/hotels", None, "collection_not_found"),
    ("/api/v1/download/batch", {"database": "serpy_db", "collection": "nowhere"}, "collection_not_found"),
])
def test_not_found(setup, path, body, code):
    _, client, _ = setup
    r = client.post(path, json=body) if body is not None else client.post(path)
    assert r.status_code == 404 and r.json["error"]["code"] == code


@pytest.mark.parametrize("path,body,code", [
    ("/api/v1/download/collection/serpy_db/hotels", {"filter": {"$where": "1"}}, "invalid_filter"),
    ("/api/v1/download/collection/serpy_db/hotels",
     {"filter": {"$and": [{"a": 1}, {"$expr": {"$function": {"body": "x"}}}]}}, "invalid_filter"),
    ("/api/v1/download/batch", {"database": "serpy_db", "collection": "hotels",
                                "filter": {"x": {"$elemMatch": {"$accumulator": {}}}}}, "invalid_filter"),
    ("/api/v1/download/collection/serpy_db/hotels", {"filter": [1, 2]}, "invalid_request"),
    ("/api/v1/download/collection/serpy_db/hotels", {"filter": "name=A"}, "invalid_request"),
    ("/api/v1/download/collection/serpy_db/hotels", {"limit": 0}, "invalid_request"),
    ("/api/v1/download/collection/serpy_db/hotels", {"limit": 100001}, "invalid_request"),
    ("/api/v1/download/collection/serpy_db/hotels", {"limit": "10"}, "invalid_request"),
    ("/api/v1/download/collection/serpy_db/hotels", {"limit": True}, "invalid_request"),
    ("/api/v1/download/collection/serpy_db/hotels", {"force": "yes"}, "invalid_request"),
    ("/api/v1/download/collection/serpy_db/hotels", {"image_fields": "images"}, "invalid_request"),
    ("/api/v1/download/collection/serpy_db/hotels", {"image_fields": ["$bad"]}, "invalid_request"),
    ("/api/v1/download/batch", {"collection": "hotels"}, "invalid_request"),
    ("/api/v1/download/batch", {"database": 3, "collection": "hotels"}, "invalid_request"),
    ("/api/v1/download/batch", None, "invalid_request"),
    ("/api/v1/download/collection/bad$db/hotels", None, "invalid_request"),
    ("/api/v1/download/collection/serpy_db/..", None, "invalid_request"),
    ("/api/v1/download/collection/serpy_db/a b", None, "invalid_request"),
    ("/api/v1/download/document/serpy_db/hotels/..", None, "invalid_request"),
    ("/api/v1/download/document/serpy_db/hotels/a%2Fb", None, "invalid_request"),
    ("/api/v1/download/document/bad.db/nowhere/x", None, "invalid_request"),
])
def test_bad_requests_are_400(setup, path, body, code):
    _, client, _ = setup
    r = client.post(path, json=body) if body is not None else client.post(path)
    assert r.status_code == 400, r.json
    assert r.json["error"]["code"] == code


def test_malformed_json_and_wrong_media_type(setup):
    _, client, _ = setup
    r = client.post("/api/v1/download/collection/serpy_db/hotels", data="{not json",
                    content_type="application/json")
    assert r.status_code == 400 and r.json["error"]["code"] == "invalid_request"
    r = client.post("/api/v1/download/collection/serpy_db/hotels", data="[1]",
                    content_type="application/json")
    assert r.status_code == 400
    r = client.post("/api/v1/download/collection/serpy_db/hotels", data="a=1",
                    content_type="text/plain")
    assert r.status_code == 415 and r.json["error"]["code"] == "unsupported_media_type"


def test_jobs_list_filters_pagination_newest_first(setup):
    _, client, _ = setup
    ids = [client.post("/api/v1/download/collection/serpy_db/hotels").json["job_id"] for _ in range(3)]
    client.post("/api/v1/download/batch", json={"database": "serpy_db", "collection": "hotels"})
    page = client.get("/api/v1/jobs?type=collection&limit=2&offset=0").json
    assert page["total"] == 3 and page["limit"] == 2 and page["offset"] == 0
    assert [j["job_id"] for j in page["jobs"]] == ids[::-1][:2]
    page2 = client.get("/api/v1/jobs?type=collection&limit=2&offset=2").json
    assert [j["job_id"] for j in page2["jobs"]] == [ids[0]]
    assert client.get("/api/v1/jobs?status=pending").json["total"] == 4
    assert client.get("/api/v1/jobs?status=completed").json["total"] == 0
    assert client.get("/api/v1/jobs").json["limit"] == 50
    assert client.get("/api/v1/jobs?limit=501").json["limit"] == 500  # at most 500
    for query in ("limit=0", "offset=-1", "limit=x", "status=done", "type=x"):
        r = client.get(f"/api/v1/jobs?{query}")
        assert r.status_code == 400 and r.json["error"]["code"] == "invalid_request"


def test_job_not_found_and_cancel_states(setup):
    _, client, _ = setup
    r = client.get("/api/v1/jobs/nope")
    assert r.status_code == 404 and r.json["error"]["code"] == "job_not_found"
    r = client.post("/api/v1/jobs/nope/cancel")
    assert r.status_code == 404 and r.json["error"]["code"] == "job_not_found"
    job_id = client.post("/api/v1/download/collection/serpy_db/hotels").json["job_id"]
    r = client.post(f"/api/v1/jobs/{job_id}/cancel")
    assert r.status_code == 200 and r.json["status"] == "cancelled"
    assert r.json["finished_at"].endswith("Z")
    r = client.post(f"/api/v1/jobs/{job_id}/cancel")
    assert r.status_code == 409 and r.json["error"]["code"] == "job_finished"


def test_redis_down_is_503_and_leaves_no_job(make_settings, own_redis):
    settings = make_settings({"REDIS_URL": f"redis://127.0.0.1:{own_redis.port}/0"})
    db = source_db(settings)
    db.hotels.drop()
    db.hotels.insert_one({"name": "A"})
    client = api_client(settings)
    own_redis.stop()
    for method, path, body in [("post", "/api/v1/download/collection/serpy_db/hotels", None),
                               ("post", "/api/v1/download/batch", {"database": "serpy_db", "collection": "hotels"})]:
        r = getattr(client, method)(path, json=body) if body else getattr(client, method)(path)
        assert r.status_code == 503 and r.json["error"]["code"] == "unavailable"
    jobs = source_db(settings, settings.jobs_database).jobs
    assert jobs.count_documents({}) == 0


def test_mongodb_down_is_503(make_settings):
    settings = make_settings({"MONGODB_URI": f"mongodb://127.0.0.1:{free_port()}"})
    client = api_client(settings)
    r = client.post("/api/v1/download/collection/serpy_db/hotels")
    assert r.status_code == 503 and r.json["error"]["code"] == "unavailable"
    r = client.get("/api/v1/jobs")
    assert r.status_code == 503 and r.json["error"]["code"] == "unavailable"


@pytest.mark.parametrize("filter_", [
    {"$bogus": 1},                        # unknown operator (nx-27017 would even accept it)
    {"name": {"$regex": "("}},            # a $regex that does not compile
    {"x": {"$in": 5}},                    # $in without a list
    {"$where": "this.a == 1"},            # runs code
    {"$expr": {"$gt": ["$x", 1]}},        # aggregation expressions: refused (filters.py)
    {"$and": []},                         # MongoDB refuses an empty $and
    {"x": {"$mod": [0, 1]}},              # passes the allow-list; the server's probe refuses it
])
@pytest.mark.parametrize("endpoint", ["collection", "batch"])
def test_invalid_filters_are_400_and_create_no_job(setup, filter_, endpoint):
    settings, client, _ = setup
    if endpoint == "collection":
        r = client.post("/api/v1/download/collection/serpy_db/hotels", json={"filter": filter_})
    else:
        r = client.post("/api/v1/download/batch", json={"database": "serpy_db",
                                                        "collection": "hotels", "filter": filter_})
    assert r.status_code == 400, r.json
    assert r.json["error"]["code"] == "invalid_filter"
    assert source_db(settings, settings.jobs_database).jobs.count_documents({}) == 0


def test_valid_operator_filters_are_accepted(setup):
    _, client, _ = setup
    for filter_ in ({"name": {"$regex": "^A", "$options": "i"}},
                    {"$or": [{"name": "A"}, {"images": {"$size": 1}}]},
                    {"_id": {"$in": ["str-id", 42]}}):
        r = client.post("/api/v1/download/batch", json={"database": "serpy_db",
                                                        "collection": "hotels", "filter": filter_})
        assert r.status_code == 202, (filter_, r.json)
        assert client.get(r.headers["Location"]).json["filter"] == filter_
