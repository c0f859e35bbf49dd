"""Capability check, stream layout, lag and the watermark of one source (fakes, no server)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from bson.timestamp import Timestamp

from images_service.config.settings import WatchNamespace, load_settings
from workers.listener.stream import (
    Capabilities,
    Source,
    detect_capabilities,
    event_lag_s,
    is_watched,
    nx_token_position,
    pipeline,
    stream_keys,
)

SETTINGS = load_settings({"WATCH_NAMESPACES": "shop.*,crm.leads", "JOBS_DATABASE": "shop"})
NX_HELLO = {"ok": 1, "isWritablePrimary": True, "maxWireVersion": 25}  # as nx-27017 answers
REPLICA_SET_HELLO = {"ok": 1, "isWritablePrimary": True, "setName": "rs0", "hosts": ["m:27017"]}
MONGOS_HELLO = {"ok": 1, "isWritablePrimary": True, "msg": "isdbgrid"}
PORTABLE = detect_capabilities(NX_HELLO)
REAL = detect_capabilities(REPLICA_SET_HELLO)


def test_capabilities_the_better_path_only_on_a_replica_set_or_mongos():
    assert PORTABLE == Capabilities(False, False, False)
    assert REAL == Capabilities(True, True, True)
    assert detect_capabilities(MONGOS_HELLO) == REAL


def test_the_portable_path_watches_one_stream_per_collection():
    collections = {("shop", "hotels"), ("shop", "cars"), ("crm", "leads")}
    assert stream_keys(SETTINGS, PORTABLE, collections) == {
        "shop.hotels": ("shop", "hotels"), "shop.cars": ("shop", "cars"),
        "crm.leads": ("crm", "leads")}


def test_the_better_path_watches_whole_databases_and_named_collections():
    collections = {("shop", "hotels"), ("shop", "cars"), ("crm", "leads")}
    assert stream_keys(SETTINGS, REAL, collections) == {
        "shop.*": ("shop", None), "crm.leads": ("crm", "leads")}


def test_own_and_system_collections_are_never_watched():
    assert is_watched(SETTINGS, "shop", "hotels")
    assert not is_watched(SETTINGS, "shop", "jobs")
    assert not is_watched(SETTINGS, "shop", "listener_state")
    assert not is_watched(SETTINGS, "shop", "system.views")
    assert not is_watched(SETTINGS, "crm", "other")
    assert is_watched(replace(SETTINGS, watch_namespaces=(WatchNamespace("x", "*"),)), "x", "y")


def test_the_portable_pipeline_filters_on_operation_type_only():
    # nx-27017 quirk: any $match beyond operationType/ns drops every event.
    (stage,) = pipeline(SETTINGS, PORTABLE)
    assert list(stage["$match"]) == ["operationType"]
    assert {"insert", "update", "replace", "delete"} <= set(stage["$match"]["operationType"]["$in"])


def test_with_watch_updates_the_better_pipeline_passes_every_update_and_delete():
    # Whether an update changed the URL list or the folder is known only from the document.
    (stage,) = pipeline(SETTINGS, REAL)
    assert list(stage["$match"]) == ["operationType"]
    assert {"insert", "update", "replace", "delete", "invalidate"} <= \
        set(stage["$match"]["operationType"]["$in"])


def test_without_watch_updates_the_better_pipeline_filters_updates_on_the_flag_server_side():
    settings = replace(SETTINGS, watch_updates=False)
    (stage,) = pipeline(settings, REAL)
    insert_or_replace, flag_update = stage["$match"]["$or"]
    assert "update" not in insert_or_replace["operationType"]["$in"]
    # deletes still pass: a later insert of the same _id is a new document (§15)
    assert "delete" in insert_or_replace["operationType"]["$in"]
    assert flag_update == {"operationType": "update",
                           "updateDescription.updatedFields.download_images": {"$in": [True, 1]}}
    # a dotted flag may be set through its parent: no server-side filter then
    dotted = replace(settings, download_flag_field="meta.download")
    assert list(pipeline(dotted, REAL)[0]["$match"]) == ["operationType"]


class FakeStream:
    def __init__(self, batches):
        self.batches = list(batches)
        self.resume_token = {"_data": "start"}
        self.closed = False

    def try_next(self):
        batch = self.batches.pop(0) if self.batches else None
        if isinstance(batch, dict) and "_id" in batch:
            self.resume_token = batch["_id"]
            return batch
        if batch is not None:  # a quiet getMore that moved the post-batch token on
            self.resume_token = batch
        return None

    def close(self):
        self.closed = True


class FakeTarget:
    def __init__(self, stream, calls, name):
        self.stream, self.calls, self.name = stream, calls, name

    def watch(self, **kwargs):
        self.calls.append((self.name, kwargs))
        return self.stream

    def __getitem__(self, name):
        return FakeTarget(self.stream, self.calls, f"{self.name}.{name}")


def test_the_database_stream_is_opened_on_the_database_with_the_server_side_filter():
    calls = []
    client = FakeTarget(FakeStream([]), calls, "client")
    source = Source("shop.*", "shop", None, token={"_data": "82abc"})
    assert source.open(client, SETTINGS, REAL) is True  # MongoDB checks tokens itself
    ((target, kwargs),) = calls
    assert target == "client.shop"
    assert kwargs["resume_after"] == {"_data": "82abc"}
    assert kwargs["pipeline"] == pipeline(SETTINGS, REAL)


def test_an_unusable_nx_token_is_detected_and_the_stream_starts_from_now():
    calls = []
    stream = FakeStream([])
    stream.resume_token = {"_data": "nx:40"}
    client = FakeTarget(stream, calls, "client")
    for bad in ({"_data": "junk"}, {"_data": "nx:41"}):
        source = Source("shop.hotels", "shop", "hotels", token=bad)
        assert source.open(client, SETTINGS, PORTABLE) is False
        assert source.token is None and "resume_after" not in calls[-1][1]
    good = Source("shop.hotels", "shop", "hotels", token={"_data": "nx:40"})
    assert good.open(client, SETTINGS, PORTABLE) is True
    assert calls[-1][1]["resume_after"] == {"_data": "nx:40"}
    assert nx_token_position({"_data": "nx:7"}) == 7 and nx_token_position(None) is None


def test_the_watermark_moves_only_past_handled_events_and_on_quiet_streams():
    e1, e2 = {"_id": {"_data": "1"}, "operationType": "insert"}, \
        {"_id": {"_data": "2"}, "operationType": "update"}
    source = Source("shop.hotels", "shop", "hotels", token={"_data": "0"})
    source.stream = FakeStream([e1, e2, None, {"_data": "quiet-3"}])
    assert source.next_event() is e1
    assert source.next_event() is e1  # not handled yet: the same event again
    assert source.token == {"_data": "0"}
    source.handled(e1)
    assert source.token == {"_data": "1"} and source.dirty
    assert source.next_event() is e2
    source.handled(e2)
    assert source.next_event() is None  # quiet, token unchanged
    assert source.token == {"_data": "2"}
    assert source.next_event() is None  # quiet, the stream's own token moved on
    assert source.token == {"_data": "quiet-3"}
    source.saved_token = source.token
    assert not source.dirty


def test_lag_from_either_kind_of_cluster_time():
    now = datetime(2026, 11, 28, 10, 0, 10, tzinfo=UTC)
    nx_event = {"clusterTime": now - timedelta(seconds=2)}  # nx-27017: a datetime
    mongo_event = {"clusterTime": Timestamp(int(now.timestamp()) - 3, 1)}
    mongo6_event = {"clusterTime": Timestamp(0, 1), "wallTime": now - timedelta(seconds=1)}
    assert event_lag_s(nx_event, now) == 2.0
    assert event_lag_s(mongo_event, now) == 3.0
    assert event_lag_s(mongo6_event, now) == 1.0
    assert event_lag_s({}, now) is None
    naive = {"clusterTime": datetime(2026, 11, 28, 10, 0, 5)}
    assert event_lag_s(naive, now) == 5.0
