"""The listener's trigger rules and idempotency keys (workers/listener/decide.py)."""

from __future__ import annotations

from dataclasses import replace

import pytest
from bson import Decimal128, Int64, ObjectId

from images_service.config.settings import load_settings
from images_service.download.urls import url_list_sha256
from workers.listener.decide import (
    FLAG,
    INSERT,
    UPDATE,
    LastDownload,
    decide,
    decide_scanned,
    field_value,
    is_flagged,
    job_id_for,
    scan_filter,
    scan_projection,
)

SETTINGS = load_settings({})
DONE = {"status": "completed", "job_id": "job-1", "downloaded": 1, "failed": 0}
OID = ObjectId("507f1f77bcf86cd799439011")
#: A write-back of today: with the URL list's hash and the folder, as that job planned them.
DONE_NOW = {**DONE, "path": f"db/hotels/{OID}-hotel",
            "urls_sha256": url_list_sha256(["https://cdn.example.com/a.jpg"])}


def make_doc(**overrides):
    doc = {"_id": ObjectId("507f1f77bcf86cd799439011"), "name": "Hotel",
           "images": ["https://cdn.example.com/a.jpg"]}
    doc.update(overrides)
    return {k: v for k, v in doc.items() if v is not None}


def test_an_inserted_document_with_images_triggers_insert():
    decision = decide(make_doc(), "insert", "db", "hotels", SETTINGS)
    assert decision is not None and decision.trigger == INSERT and decision.version is None


@pytest.mark.parametrize("doc", [
    make_doc(images=None),                      # no image field
    make_doc(images=["ftp://x/a.jpg", 3, ""]),  # nothing that counts as an image URL
    make_doc(images_download=DONE),             # already downloaded (a replayed insert)
])
def test_inserts_that_need_nothing(doc):
    assert decide(doc, "insert", "db", "hotels", SETTINGS) is None


def test_inserts_are_ignored_without_watch_inserts():
    settings = replace(SETTINGS, watch_inserts=False)
    assert decide(make_doc(), "insert", "db", "hotels", settings) is None
    flagged = decide(make_doc(download_images=True), "insert", "db", "hotels", settings)
    assert flagged.trigger == FLAG


@pytest.mark.parametrize("operation", ["insert", "update", "replace", "scan"])
@pytest.mark.parametrize("flag", [True, 1])  # nx-27017 reads a $set boolean back as 1
def test_a_true_flag_triggers_after_any_operation(operation, flag):
    decision = decide(make_doc(download_images=flag), operation, "db", "hotels", SETTINGS)
    assert decision is not None and decision.trigger == FLAG


@pytest.mark.parametrize("flag", [False, 0, "true", None, 2])
def test_other_flag_values_do_not_trigger_on_update(flag):
    no_updates = replace(SETTINGS, watch_updates=False)
    assert decide(make_doc(download_images=flag), "update", "db", "hotels", no_updates) is None
    # with WATCH_UPDATES the never-downloaded document is handled as an insert, not a flag
    assert decide(make_doc(download_images=flag), "update", "db", "hotels",
                  SETTINGS).trigger == INSERT


def test_an_insert_with_images_and_the_flag_is_one_job_the_same_the_scan_computes():
    doc = make_doc(download_images=True)
    by_event = decide(doc, "insert", "db", "hotels", SETTINGS)
    by_scan = decide_scanned(doc, "db", "hotels", SETTINGS)
    assert by_event == by_scan and by_event.trigger == FLAG


def test_updates_of_other_fields_and_the_write_back_trigger_nothing():
    assert decide(make_doc(rating=5), "update", "db", "hotels",
                  replace(SETTINGS, watch_updates=False)) is None
    assert decide(make_doc(rating=5, images_download=DONE_NOW), "update", "db", "hotels",
                  SETTINGS) is None
    for status in (DONE, DONE_NOW):  # an older write-back (no urls_sha256) and today's
        written_back = make_doc(download_images=False, images_download=status)
        assert decide(written_back, "update", "db", "hotels", SETTINGS) is None
        assert decide_scanned(written_back, "db", "hotels", SETTINGS) is None


def test_a_document_flagged_again_after_its_download_is_a_new_version():
    first = decide(make_doc(download_images=True), "update", "db", "hotels", SETTINGS)
    again = decide(make_doc(download_images=True, images_download=DONE), "update", "db",
                   "hotels", SETTINGS)
    assert first.version is None and again.version == "job-1"
    assert first.job_id != again.job_id
    # ... while replays of the same version agree
    assert again == decide(make_doc(download_images=True, images_download=DONE, other=1),
                           "replace", "db", "hotels", SETTINGS)


def test_job_ids_are_deterministic_and_distinguish_everything_in_the_key():
    base = job_id_for("db", "hotels", 1, FLAG, None)
    # Pinned values: the ids must be the same in every process and release. A changed id
    # re-keys every pending job (listeners of two versions would enqueue duplicates during a
    # rolling upgrade), so change them only deliberately, with KEY_VERSION.
    assert base == "e544aff137ff4ef93289c7a72be9f680"
    assert job_id_for("serpy_db", "hotels", ObjectId("507f1f77bcf86cd799439011"), INSERT,
                      None) == "3bc96e29503d89a60b814f69c8273f03"
    assert len(base) == 32 and int(base, 16) >= 0
    others = {job_id_for("db", "hotels", "1", FLAG, None),
              job_id_for("db", "hotels", 1.5, FLAG, None),
              job_id_for("db2", "hotels", 1, FLAG, None),
              job_id_for("db", "shops", 1, FLAG, None),
              job_id_for("db", "hotels", 1, INSERT, None),
              job_id_for("db", "hotels", 1, FLAG, "j")}
    assert base not in others and len(others) == 6


def test_dotted_fields_nested_or_flat_as_nx_projects_them():
    settings = replace(SETTINGS, download_flag_field="meta.download",
                       status_field="meta.status", image_fields=("media.gallery",))
    nested = {"_id": 1, "meta": {"download": True, "status": {"job_id": "j"}},
              "media": {"gallery": ["https://x/a.jpg"]}}
    assert decide(nested, "update", "db", "c", settings).version == "j"
    assert field_value({"a.b": 1}, "a.b") == 1  # nx-27017 returns a dotted projection flat
    assert field_value({"a": {"b": 2}, "a.b": 1}, "a.b") == 2
    assert scan_projection(settings) == {"media": 1, "meta": 1, "name": 1}
    assert scan_projection(replace(settings, watch_updates=False)) == {"media": 1, "meta": 1}


def test_the_scan_filter_matches_the_rules():
    flagged = {"download_images": {"$in": [True, 1]}}
    never_downloaded = {"$and": [{"images_download.status": {"$exists": False}},
                                 {"$or": [{"images": {"$exists": True}}]}]}
    written_back = {"images_download.urls_sha256": {"$exists": True}}
    assert scan_filter(SETTINGS) == {"$or": [flagged, never_downloaded, written_back]}
    no_updates = replace(SETTINGS, watch_updates=False)
    assert scan_filter(no_updates) == {"$or": [flagged, never_downloaded]}
    assert scan_filter(replace(SETTINGS, watch_inserts=False)) == {"$or": [flagged,
                                                                          written_back]}
    assert scan_filter(replace(no_updates, watch_inserts=False)) == flagged


@pytest.mark.parametrize("value,flagged", [
    (True, True), (1, True), (1.0, True), (Int64(1), True), (Decimal128("1.0"), True),
    ([False, 1], True), ([True], True),            # $in matches array elements
    (False, False), (0, False), (0.0, False), (2, False), ("true", False), ("1", False),
    (None, False), ([], False), ([[True]], False), ({"a": 1}, False), (Decimal128("2"), False),
])
def test_the_flag_rule_is_what_the_servers_in_matches(value, flagged):
    assert is_flagged({"_id": 1, "download_images": value}, SETTINGS) is flagged
    assert not is_flagged({"_id": 1}, SETTINGS)


def test_without_write_back_the_scan_only_backfills_flags():
    settings = replace(SETTINGS, status_field="")
    assert scan_filter(settings) == {"download_images": {"$in": [True, 1]}}
    assert decide_scanned(make_doc(), "db", "hotels", settings) is None
    assert decide_scanned(make_doc(download_images=1), "db", "hotels", settings).trigger == FLAG
    # events still apply the insert rule
    assert decide(make_doc(), "insert", "db", "hotels", settings).trigger == INSERT


def test_a_deleted_document_needs_nothing():
    assert decide(None, "update", "db", "hotels", SETTINGS) is None


# --- updates (contract §15) ---------------------------------------------------------------------

URLS = ["https://cdn.example.com/a.jpg", "https://cdn.example.com/b.jpg"]


def downloaded(urls=URLS, name="Hotel", **fields):
    """A document whose last download planned ``urls`` under the name "Hotel"."""
    status = {**DONE, "path": f"db/hotels/{OID}-hotel", "urls_sha256": url_list_sha256(urls)}
    return make_doc(**{"images": list(urls), "name": name, "images_download": status,
                       **fields})


@pytest.mark.parametrize("operation", ["update", "replace", "scan"])
def test_a_changed_url_list_or_folder_name_is_an_update(operation):
    pushed = downloaded(images=[*URLS, "https://cdn.example.com/c.jpg"])
    reordered = downloaded(images=list(reversed(URLS)))
    renamed = downloaded(name="Hotel Ritz")
    emptied = downloaded(images=[])
    decisions = [decide(doc, operation, "db", "hotels", SETTINGS)
                 for doc in (pushed, reordered, renamed, emptied)]
    assert [d.trigger for d in decisions] == [UPDATE] * 4
    assert len({d.job_id for d in decisions}) == 4  # the target is the version
    # the same change seen again (a replay, the scan, an unrelated field) is the same job
    assert decide({**pushed, "rating": 3}, "update", "db", "hotels", SETTINGS) == decisions[0]
    assert decide_scanned(pushed, "db", "hotels", SETTINGS) == decisions[0]


def test_the_write_back_of_a_job_that_planned_the_old_list_lands_on_the_same_update_job():
    changed = downloaded(images=[*URLS, "https://cdn.example.com/c.jpg"])
    update = decide(changed, "update", "db", "hotels", SETTINGS)
    # another job (planned before the change) writes back: same old list, a new job id
    status = {**changed["images_download"], "job_id": "job-2"}
    assert decide({**changed, "images_download": status}, "update", "db", "hotels",
                  SETTINGS) == update


def test_no_update_without_watch_updates_and_the_flag_still_wins():
    renamed = downloaded(name="Hotel Ritz")
    assert decide(renamed, "update", "db", "hotels", replace(SETTINGS, watch_updates=False)) \
        is None
    assert decide({**renamed, "download_images": True}, "update", "db", "hotels",
                  SETTINGS).trigger == FLAG
    # an insert event is never an update (a replayed insert of a downloaded document)
    assert decide(renamed, "insert", "db", "hotels", SETTINGS) is None


def test_a_metadata_json_as_the_last_download_when_the_write_back_cannot_say():
    folder = f"db/hotels/{OID}-hotel"
    doc = make_doc(images=list(URLS), images_download=DONE)  # an older write-back
    same = LastDownload(folder, urls=tuple(URLS))
    running = LastDownload(folder, urls=(URLS[0], None))  # index 2 not recorded yet
    assert decide(doc, "update", "db", "hotels", SETTINGS, last=same) is None
    assert decide(doc, "update", "db", "hotels", SETTINGS, last=running) is None
    for other in (LastDownload(folder, urls=(URLS[1], URLS[0])),
                  LastDownload(folder, urls=(URLS[0],)),
                  LastDownload(f"db/hotels/{OID}-old-name", urls=tuple(URLS))):
        assert decide(doc, "update", "db", "hotels", SETTINGS, last=other).trigger == UPDATE
    # the write-back's own record wins over it
    assert decide(downloaded(), "update", "db", "hotels", SETTINGS,
                  last=LastDownload(folder, urls=())) is None
