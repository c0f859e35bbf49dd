"""Live job progress, per-document completion and the scan checkpoint: one Redis hash per job.

Why Redis and scripts: many worker threads and processes finish images of one job (and of
one document) at once, and a message may be delivered twice (a worker killed after doing its
work but before acking). Each script is one atomic step that is also idempotent:

- ``plan``: a document counts towards ``documents_total``/``images_total`` once (field
  ``p:<document>`` holds its number of images), however often its scan batch is replayed;
- ``image_done``: an image index is set in its document's bitmap (field ``d:<document>``) and,
  the first time only, the image's outcome (downloaded, skipped, failed) is counted: progress
  moves image by image (as each document's images are recorded), never by whole messages;
  the caller learns whether every image of the document is now done;
- ``finalize``: a finished document is counted once (field ``f:<document>``).

The MongoDB job document receives these totals with ``$max`` (jobs.JobStore), so it can only
move forward and never double counts.

Lifetime (contract §10: Redis does not grow with finished jobs): the hash ``isv:job:{<id>}``
holds everything (counters, ``scan_done``, the scan checkpoint ``scan_last_id`` /
``scan_count``, the per-document fields), so ending a job is one ``DEL`` (:meth:`forget`).
Only :meth:`start` creates the hash (the scan, after checking the job is active); every other
script writes only while the hash exists, so a message still in flight when its job ends
(a cancel from the API, a failure) recreates nothing. ``TTL_S`` after the last write is a
safety net for a job whose end was never seen.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Iterable

import redis

from images_service.jobs.store import ALL_PROGRESS_FIELDS, PROGRESS_FIELDS, REFRESH_FIELDS

PREFIX = "isv:job"
#: Safety net: a job's hash expires this long after its last write (seconds): 14 days.
TTL_S = 14 * 24 * 3600
#: Fields returned as the job's counters (progress plus whether the scan is over).
COUNTERS = (*ALL_PROGRESS_FIELDS, "scan_done")
#: What became of one image, as counted (``images_<outcome>``); the last four: re-checks (§16).
OUTCOMES = ("downloaded", "skipped", "failed", "not_modified", "changed", "missing", "gone")

# Every script starts with this: a missing hash means the job ended (or never started).
_LIVE = """
local h = KEYS[1]
if redis.call('EXISTS', h) == 0 then return false end
local function counters() return redis.call('HMGET', h, %s) end
""" % ", ".join(f"'{name}'" for name in COUNTERS)

_PLAN = _LIVE + """
for i = 2, #ARGV, 2 do
  local key, n = ARGV[i], tonumber(ARGV[i + 1])
  if redis.call('HSETNX', h, 'p:' .. key, n) == 1 then
    redis.call('HINCRBY', h, 'documents_total', 1)
    redis.call('HINCRBY', h, 'images_total', n)
  end
end
redis.call('EXPIRE', h, tonumber(ARGV[1]))
return counters()
"""

# The done images of a document are bits of a string field (bit i of byte i // 8 + 1); ARGV
# from 3 on: index, outcome pairs; an outcome is counted when its image's bit is first set.
_IMAGE_DONE = _LIVE + """
local field = 'd:' .. ARGV[1]
local old = redis.call('HGET', h, field) or ''
local bytes = {}
for i = 1, #old do bytes[i] = string.byte(old, i) end
for i = 3, #ARGV, 2 do
  local index = tonumber(ARGV[i])
  local pos = math.floor(index / 8) + 1
  for j = #bytes + 1, pos do bytes[j] = 0 end
  local mask = bit.lshift(1, index % 8)
  if bit.band(bytes[pos], mask) == 0 then
    bytes[pos] = bit.bor(bytes[pos], mask)
    redis.call('HINCRBY', h, 'images_' .. ARGV[i + 1], 1)
  end
end
local count, chars = 0, {}
for i = 1, #bytes do
  local b = bytes[i]
  chars[i] = string.char(b)
  while b > 0 do count = count + bit.band(b, 1); b = bit.rshift(b, 1) end
end
redis.call('HSET', h, field, table.concat(chars))
redis.call('EXPIRE', h, tonumber(ARGV[2]))
return {count, tonumber(redis.call('HGET', h, 'p:' .. ARGV[1]) or '-1')}
"""

_FINALIZE = _LIVE + """
local first = redis.call('HSETNX', h, 'f:' .. ARGV[1], 1)
if first == 1 then
  redis.call('HINCRBY', h, 'documents_done', 1)
end
redis.call('EXPIRE', h, tonumber(ARGV[2]))
local out = counters()
table.insert(out, first)
return out
"""

# A refresh run checks each URL once (§16): field u:<url key> is 'pending:<epoch s>' while a
# worker checks it (taken over when older than ARGV[3] seconds: that worker died), then the
# result. Returns {'mine'}, {'pending'} or {'done', result}.
_URL_CHECK = _LIVE + """
local field = 'u:' .. ARGV[1]
local now = tonumber(ARGV[2])
local current = redis.call('HGET', h, field)
if current and string.sub(current, 1, 8) == 'pending:' then
  if now - tonumber(string.sub(current, 9)) <= tonumber(ARGV[3]) then return {'pending'} end
  current = false
end
if not current then
  redis.call('HSET', h, field, 'pending:' .. ARGV[2])
  return {'mine'}
end
return {'done', current}
"""

_SET = _LIVE + """
for i = 2, #ARGV, 2 do redis.call('HSET', h, ARGV[i], ARGV[i + 1]) end
redis.call('EXPIRE', h, tonumber(ARGV[1]))
return counters()
"""


def _counters(values: list) -> dict[str, int]:
    return {name: int(v) for name, v in zip(COUNTERS, values) if v is not None}


@dataclass(frozen=True)
class Progress:
    counters: dict[str, int]
    scan_done: bool

    @classmethod
    def from_values(cls, values: list) -> "Progress":
        counters = _counters(values)
        return cls(counters, bool(counters.pop("scan_done", 0)))

    def complete(self) -> bool:
        """Every planned document is finalized and the scan will plan no more."""
        return self.scan_done and self.counters.get("documents_done", 0) >= self.counters.get(
            "documents_total", 0
        )

    def as_job_progress(self) -> dict[str, int]:
        progress = {name: int(self.counters.get(name, 0)) for name in PROGRESS_FIELDS}
        # A refresh job's own counters (§16), only where counted: download jobs have none.
        progress.update({name: int(self.counters[name]) for name in REFRESH_FIELDS
                         if name in self.counters})
        return progress


class ProgressTracker:
    """The Redis side of a job; methods return None once the job's state is gone (ended)."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client
        self._plan = client.register_script(_PLAN)
        self._image_done = client.register_script(_IMAGE_DONE)
        self._finalize = client.register_script(_FINALIZE)
        self._set = client.register_script(_SET)
        self._url_check = client.register_script(_URL_CHECK)

    @staticmethod
    def key(job_id: str) -> str:
        return f"{PREFIX}:{{{job_id}}}"  # the hash tag keeps a job on one Redis Cluster slot

    def start(self, job_id: str) -> None:
        """Create the job's state (idempotent); only the scan calls this, on an active job."""
        pipe = self.redis.pipeline()
        pipe.hsetnx(self.key(job_id), "documents_total", 0)
        pipe.expire(self.key(job_id), TTL_S)
        pipe.execute()

    def forget(self, job_id: str) -> None:
        """Remove the job's state: it has ended (idempotent)."""
        self.redis.delete(self.key(job_id))

    def plan(self, job_id: str, documents: Iterable[tuple[str, int]]) -> Progress | None:
        """Count each (document key, number of images) once towards the job's totals."""
        args: list[object] = [TTL_S]
        for key, n in documents:
            args += [key, n]
        values = self._plan(keys=[self.key(job_id)], args=args)
        return None if values is None else Progress.from_values(values)

    def image_done(self, job_id: str, document_key: str,
                   outcomes: Iterable[tuple[int, str]]) -> bool:
        """Mark images final, each ``(index, outcome)`` with outcome ``downloaded``,
        ``skipped`` or ``failed`` counted the first time only; True when every image of the
        document is final (also when they all were already: a replayed message must still be
        able to finish it)."""
        args: list[object] = [document_key, TTL_S]
        for index, outcome in outcomes:
            if outcome not in OUTCOMES:
                raise ValueError(f"unknown image outcome {outcome!r}")
            args += [index, outcome]
        result = self._image_done(keys=[self.key(job_id)], args=args)
        if result is None:
            return False  # the job ended: nothing is left to finish
        count, total = result
        return int(total) >= 0 and int(count) >= int(total)

    def finalize(self, job_id: str, document_key: str) -> tuple[bool, Progress | None]:
        """Count a finished document once; returns (first time, progress after)."""
        values = self._finalize(keys=[self.key(job_id)], args=[document_key, TTL_S])
        if values is None:
            return False, None
        return bool(values[-1]), Progress.from_values(values[:-1])

    def check_url(self, job_id: str, url_key: str, *,
                  stale_after_s: float) -> tuple[str, str | None]:
        """A refresh run's claim on one URL's check: ``("mine", None)`` (check it, then
        :meth:`url_checked`), ``("pending", None)`` (another worker is checking it: ask again
        soon), ``("done", result)``, or ``("ended", None)`` when the job's state is gone."""
        answer = self._url_check(keys=[self.key(job_id)],
                                 args=[url_key, int(time.time()), int(stale_after_s)])
        if answer is None:
            return "ended", None
        state = answer[0].decode() if isinstance(answer[0], bytes) else answer[0]
        result = answer[1] if len(answer) > 1 else None
        return state, (result.decode() if isinstance(result, bytes) else result)

    def url_checked(self, job_id: str, url_key: str, result: str | None) -> None:
        """Record a URL's check result for this run (None: give the claim up, e.g. a
        retryable failure: the retry or another document checks it again)."""
        if result is None:
            self.redis.hdel(self.key(job_id), f"u:{url_key}")
        else:
            self._set(keys=[self.key(job_id)], args=[TTL_S, f"u:{url_key}", result])

    def mark_scan_done(self, job_id: str) -> Progress | None:
        values = self._set(keys=[self.key(job_id)], args=[TTL_S, "scan_done", 1])
        return None if values is None else Progress.from_values(values)

    def save_checkpoint(self, job_id: str, last_id_json: str, scanned: int) -> bool:
        """Where the scan is: the last ``_id`` (Extended JSON) and documents read so far."""
        values = self._set(keys=[self.key(job_id)],
                           args=[TTL_S, "scan_last_id", last_id_json, "scan_count", scanned])
        return values is not None

    def checkpoint(self, job_id: str) -> tuple[str | None, int]:
        last_id, count = self.redis.hmget(self.key(job_id), ["scan_last_id", "scan_count"])
        return (last_id.decode() if last_id else None), int(count or 0)

    def current(self, job_id: str) -> Progress | None:
        values = self.redis.hmget(self.key(job_id), list(COUNTERS))
        if all(v is None for v in values):
            return None
        return Progress.from_values(values)


def with_live_progress(jobs: list[dict], tracker: ProgressTracker) -> list[dict]:
    """``jobs`` (MongoDB documents) with each active job's progress raised to its live Redis
    counters, which move image by image, while MongoDB's copy is written once per message.

    One pipelined round trip for the whole list. Counters only grow, so the larger of the two
    is the truth; when Redis does not answer, MongoDB's copy is shown as it is.
    """
    active = [job for job in jobs if job.get("status") in ("pending", "running")]
    if not active:
        return jobs
    pipe = tracker.redis.pipeline(transaction=False)
    for job in active:
        pipe.hmget(tracker.key(job["_id"]), list(ALL_PROGRESS_FIELDS))
    try:
        answers = pipe.execute()
    except redis.RedisError:
        return jobs
    for job, values in zip(active, answers):
        stored = job.get("progress") or {}
        job["progress"] = {name: max(int(stored.get(name) or 0), int(value or 0))
                           for name, value in zip(ALL_PROGRESS_FIELDS, values)
                           if value is not None or name in stored}
    return jobs
