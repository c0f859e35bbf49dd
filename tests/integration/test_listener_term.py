"""Leader terms in-process: resume from the checkpoint alone, interrupted scans, fencing.

Resume from the checkpoint alone, as on a server that vouches for its history.

On nx-27017 every start also runs a catch-up scan, which would hide a checkpoint that got
ahead of the work done. Here the leader term runs in-process against nx-27017 with the
capabilities of a real replica set's *history* guarantee (no start scan when a token exists),
so only the contiguous watermark stands between a crash and a lost event. Crashes are
simulated by an exception escaping the term at random points (before or after an enqueue),
which skips the final checkpoint exactly like a SIGKILL.
"""

from __future__ import annotations

import random
import threading
import time

import pytest
import redis
from pymongo import MongoClient

from images_service.backends import mongo_client, redis_client
from images_service.errors import Unavailable
from images_service.jobs.store import JobStore
from images_service.jobs.triggers import Triggers
from images_service.queueing.broker import build_broker
from images_service.queueing.messages import Enqueuer
from workers.listener import loop as listener_loop
from workers.listener.checkpoint import StateStore
from workers.listener.enqueue import CrashPoints, JobSubmitter
from workers.listener.lease import Lease
from workers.listener.loop import LeaderTerm, ListenerServices
from workers.listener.scan import CatchUpScan
from workers.listener.stream import Capabilities
from workers.listener.tree import Decider

#: History guarantee of a real replica set; streams and filters stay the portable ones
#: (nx-27017 has no database streams, and drops every event on a richer $match).
VOUCHING = Capabilities(database_streams=False, vouches_for_history=True,
                        server_side_filter=False)


class SimulatedCrash(Exception):
    pass


class CrashingSubmitter(JobSubmitter):
    """Dies at the Nth job that does not exist yet (replays of earlier terms do not count):
    before creating it, after creating it, or after Redis seemed down for a while (the term
    then checkpoints while that event waits, and must not save its token)."""

    def __init__(self, *args, crash_at: int | None, mode: str, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.new, self.crash_at, self.mode, self.outage = 0, crash_at, mode, 0

    def submit(self, database, collection, source_id, decision, redecide=None):
        is_new = self.jobs.collection.find_one({"_id": decision.job_id}) is None
        hit = is_new and self.new + 1 == self.crash_at
        if hit and self.mode == "blocked":
            self.outage += 1
            if self.outage <= 3:  # the same event comes back after a backoff
                raise Unavailable("Redis is unavailable (simulated)")
            raise SimulatedCrash("after an outage")
        if hit and self.mode == "before":
            raise SimulatedCrash("before enqueue")
        outcome = super().submit(database, collection, source_id, decision, redecide)
        self.new += is_new
        if hit and self.mode == "after":
            raise SimulatedCrash("after enqueue, before the checkpoint")
        return outcome


@pytest.fixture
def vouching(monkeypatch):
    monkeypatch.setattr(listener_loop, "detect_capabilities", lambda hello: VOUCHING)
    # Checkpoint at every polling round and back off briefly: crashes then fall between
    # checkpoints as often as possible.
    monkeypatch.setattr(listener_loop, "CHECKPOINT_INTERVAL_S", 0.0)
    monkeypatch.setattr(listener_loop, "BACKOFF_MIN_S", 0.01)


def _services(settings, lease, crash_at=None, mode="before") -> ListenerServices:
    mongo = mongo_client(settings)
    red = redis_client(settings)
    jobs = JobStore(mongo, settings.jobs_database)
    enqueuer = Enqueuer(build_broker(settings, client=red))
    submitter = CrashingSubmitter(Triggers(settings, mongo, red, jobs, enqueuer), jobs, enqueuer,
                                  lease, crash_at=crash_at, mode=mode)
    return ListenerServices(settings=settings, mongo=mongo,
                            state=StateStore(mongo, settings.jobs_database),
                            submitter=submitter, lease=lease, crash=CrashPoints(),
                            decider=Decider(settings, None, jobs))


def _run_term(services: ListenerServices, stop: threading.Event) -> threading.Thread:
    def run() -> None:
        try:
            LeaderTerm(services, stop).run()
        except SimulatedCrash:
            pass

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_crashes_at_random_points_resume_from_the_checkpoint_without_loss_or_duplicate(
        make_settings, vouching):
    seed = random.randrange(1_000_000)
    rng = random.Random(seed)
    database = f"res_{seed}"
    settings = make_settings({"WATCH_NAMESPACES": f"{database}.*"})
    coll = MongoClient(settings.mongodb_uri)[database].hotels
    coll.insert_one({"name": "seed"})
    lease = Lease(redis.Redis.from_url(settings.redis_url), settings.jobs_database,
                  ttl_ms=120_000)
    assert lease.try_acquire()
    jobs = MongoClient(settings.mongodb_uri)[settings.jobs_database].jobs
    expected = []

    def write(count: int) -> None:
        for i in range(count):
            doc = {"name": f"d{len(expected)}", "images": [f"http://img.test/{len(expected)}"]}
            expected.append(coll.insert_one(doc).inserted_id)
            if i % 3 == 0:
                coll.update_one({"_id": expected[-1]}, {"$set": {"views": i}})  # no job

    # A first term makes the first checkpoint (no history before it to vouch for)
    stop = threading.Event()
    thread = _run_term(_services(settings, lease), stop)
    time.sleep(1.2)
    stop.set()
    thread.join(10)
    state = StateStore(MongoClient(settings.mongodb_uri), settings.jobs_database)
    assert f"{database}.hotels" in state.load_tokens()

    for round_ in range(9):
        # Writes while "down", then a term that crashes at a random point while writes go on
        write(rng.randint(3, 12))
        mode = ("before", "after", "blocked")[round_ % 3]
        crash_at = rng.randint(1, 3 if mode == "blocked" else 8)
        stop = threading.Event()
        thread = _run_term(_services(settings, lease, crash_at, mode), stop)
        write(rng.randint(0, 8))
        thread.join(5)
        if thread.is_alive():  # fewer events than crash_at: stop it cleanly instead
            stop.set()
            thread.join(10)
    # A last term that runs to the end
    stop = threading.Event()
    thread = _run_term(_services(settings, lease), stop)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and jobs.count_documents({}) < len(expected):
            time.sleep(0.05)
        time.sleep(0.5)
    finally:
        stop.set()
        thread.join(10)
    per_doc: dict[str, int] = {}
    for job in jobs.find({}, {"document_id": 1}):
        per_doc[job["document_id"]] = per_doc.get(job["document_id"], 0) + 1
    assert per_doc == {str(i): 1 for i in expected}, f"seed {seed}"


def test_an_interrupted_scan_resumes_from_its_last_id(make_settings, vouching, monkeypatch):
    database = "res_scan"
    settings = make_settings({"WATCH_NAMESPACES": f"{database}.*"})
    client = MongoClient(settings.mongodb_uri)
    coll = client[database][f"c_{settings.jobs_database}"]
    coll.insert_many([{"_id": i, "images": [f"http://img.test/{i}"]} for i in range(20)])
    lease = Lease(redis.Redis.from_url(settings.redis_url), settings.jobs_database,
                  ttl_ms=120_000)
    assert lease.try_acquire()
    state = StateStore(client, settings.jobs_database)
    # Given a checkpoint for the stream and a scan that got to _id 11 before a crash
    state.save_token(f"{database}.{coll.name}", coll.watch().resume_token, lease.epoch)
    scan = CatchUpScan()
    scan.add({(database, coll.name)}, "history_lost")
    scan.items[0]["last_id"] = 11
    state.save_scan(scan.state(), lease.epoch)
    services = _services(settings, lease)
    read: list = []
    real_step = CatchUpScan.step

    def recording_step(self, mongo, settings_, submitter, decider):
        class Spy:
            settled = submitter.settled

            def submit(self, database_, collection, source_id, decision, redecide=None):
                read.append(source_id)
                return submitter.submit(database_, collection, source_id, decision, redecide)
        return real_step(self, mongo, settings_, Spy(), decider)

    monkeypatch.setattr(CatchUpScan, "step", recording_step)
    # When a new term starts, it resumes that scan: only documents after _id 11
    stop = threading.Event()
    thread = _run_term(services, stop)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (state.load_scan() or len(read) < 8):
        time.sleep(0.05)
    stop.set()
    thread.join(10)
    assert read == list(range(12, 20))
    assert state.load_scan() is None


def test_a_leader_whose_lease_lapsed_enqueues_nothing_and_steps_down(make_settings):
    # Given a leader term whose lease clock we control (a SIGSTOP, compressed in time)
    database = "zombie_db"
    settings = make_settings({"WATCH_NAMESPACES": f"{database}.*"})
    client = MongoClient(settings.mongodb_uri)
    coll = client[database][f"c_{settings.jobs_database}"]
    coll.insert_one({"name": "seed"})
    red = redis.Redis.from_url(settings.redis_url)
    now = [1000.0]
    zombie = Lease(red, settings.jobs_database, clock=lambda: now[0])
    assert zombie.try_acquire()
    services = _services(settings, zombie)
    stop = threading.Event()
    ended: list = []
    thread = threading.Thread(target=lambda: ended.append(LeaderTerm(services, stop).run()),
                              daemon=True)
    thread.start()
    jobs = client[settings.jobs_database].jobs
    first = coll.insert_one({"name": "a", "images": ["http://img.test/a"]}).inserted_id
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not jobs.find_one({"document_id": str(first)}):
        time.sleep(0.02)
    assert jobs.find_one({"document_id": str(first)})

    # When its lease lapses (its own clock says so) and another listener takes over
    now[0] += 60
    red.delete(zombie.key)  # expired in Redis too
    successor = Lease(red, settings.jobs_database)
    assert successor.try_acquire() and successor.epoch > zombie.epoch
    StateStore(client, settings.jobs_database).fence(successor.epoch)
    late = coll.insert_one({"name": "late", "images": ["http://img.test/late"]}).inserted_id
    thread.join(10)

    # Then the old leader ended its term without creating a job for what came after
    assert ended == ["lease_lost"]
    assert jobs.find_one({"document_id": str(late)}) is None
    assert all(doc["epoch"] == successor.epoch
               for doc in client[settings.jobs_database].listener_state.find({"epoch": {"$gt": 0}}))
