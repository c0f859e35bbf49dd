"""Live job progress and per-document completion, kept in Redis by atomic Lua scripts.

Why Redis and scripts: many worker threads and processes finish images of one job (and of
one document) at once, and a message may be delivered twice (a worker killed after doing its
work but before acking). Each script is one atomic step that is also idempotent:

- ``plan``: a document counts towards ``documents_total``/``images_total`` once (set of
  planned document keys), however often its scan batch is replayed;
- ``image_done``: an image index is added to its document's done-set; the caller learns
  whether every image of the document is now done;
- ``finalize``: a document's counters are added once (set of finalized document keys).

The MongoDB job document receives these totals with ``$max`` (jobs.JobStore), so it can only
move forward and never double counts. Keys expire ``TTL_S`` after their last write.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import redis

from images_service.jobs import PROGRESS_FIELDS

PREFIX = "isv:job"
#: Runtime state of a job is kept this long after its last change (seconds): 14 days.
TTL_S = 14 * 24 * 3600

_PLAN = """
local planned, progress, sizes = KEYS[1], KEYS[2], KEYS[3]
local ttl = tonumber(ARGV[1])
for i = 2, #ARGV, 2 do
  local key, n = ARGV[i], tonumber(ARGV[i + 1])
  if redis.call('SADD', planned, key) == 1 then
    redis.call('HINCRBY', progress, 'documents_total', 1)
    redis.call('HINCRBY', progress, 'images_total', n)
    redis.call('HSET', sizes, key, n)
  end
end
for _, k in ipairs(KEYS) do redis.call('EXPIRE', k, ttl) end
return redis.call('HGETALL', progress)
"""

_IMAGE_DONE = """
local done, sizes = KEYS[1], KEYS[2]
local ttl = tonumber(ARGV[2])
for i = 3, #ARGV do redis.call('SADD', done, ARGV[i]) end
redis.call('EXPIRE', done, ttl)
local n = tonumber(redis.call('HGET', sizes, ARGV[1]) or '-1')
return {redis.call('SCARD', done), n}
"""

_FINALIZE = """
local finalized, progress = KEYS[1], KEYS[2]
local ttl = tonumber(ARGV[5])
local first = redis.call('SADD', finalized, ARGV[1])
if first == 1 then
  redis.call('HINCRBY', progress, 'documents_done', 1)
  redis.call('HINCRBY', progress, 'images_downloaded', tonumber(ARGV[2]))
  redis.call('HINCRBY', progress, 'images_skipped', tonumber(ARGV[3]))
  redis.call('HINCRBY', progress, 'images_failed', tonumber(ARGV[4]))
end
redis.call('EXPIRE', finalized, ttl)
redis.call('EXPIRE', progress, ttl)
local out = redis.call('HGETALL', progress)
table.insert(out, '_first')
table.insert(out, first)
return out
"""


def _as_dict(flat: list) -> dict[str, int]:
    it = iter(flat)
    return {(k.decode() if isinstance(k, bytes) else k): int(v) for k, v in zip(it, it)}


@dataclass(frozen=True)
class Progress:
    counters: dict[str, int]
    scan_done: bool

    def complete(self) -> bool:
        """Every planned document is finalized and the scan will plan no more."""
        return self.scan_done and self.counters.get("documents_done", 0) >= self.counters.get(
            "documents_total", 0
        )

    def as_job_progress(self) -> dict[str, int]:
        return {name: int(self.counters.get(name, 0)) for name in PROGRESS_FIELDS}


class ProgressTracker:
    def __init__(self, client: redis.Redis) -> None:
        self.redis = client
        self._plan = client.register_script(_PLAN)
        self._image_done = client.register_script(_IMAGE_DONE)
        self._finalize = client.register_script(_FINALIZE)

    @staticmethod
    def _keys(job_id: str) -> dict[str, str]:
        base = f"{PREFIX}:{{{job_id}}}"  # one hash slot per job (Redis Cluster friendly)
        return {
            "planned": f"{base}:planned",
            "progress": f"{base}:progress",
            "sizes": f"{base}:sizes",
            "finalized": f"{base}:finalized",
        }

    def plan(self, job_id: str, documents: Iterable[tuple[str, int]]) -> Progress:
        """Count each (document key, number of images) once towards the job's totals."""
        keys = self._keys(job_id)
        args: list[object] = [TTL_S]
        for key, n in documents:
            args += [key, n]
        flat = self._plan(keys=[keys["planned"], keys["progress"], keys["sizes"]], args=args)
        counters = _as_dict(flat)
        return Progress(counters, bool(counters.pop("scan_done", 0)))

    def image_done(self, job_id: str, document_key: str, indexes: Iterable[int]) -> bool:
        """Mark images final; True when every image of the document is final (also when
        they all were already: a replayed message must still be able to finish it)."""
        keys = self._keys(job_id)
        done_key = f"{PREFIX}:{{{job_id}}}:done:{document_key}"
        count, total = self._image_done(keys=[done_key, keys["sizes"]],
                                        args=[document_key, TTL_S, *indexes])
        return int(total) >= 0 and int(count) >= int(total)

    def finalize(self, job_id: str, document_key: str, *, downloaded: int, skipped: int,
                 failed: int) -> tuple[bool, Progress]:
        """Add a finished document's counts once; returns (first time, progress after)."""
        keys = self._keys(job_id)
        flat = self._finalize(keys=[keys["finalized"], keys["progress"]],
                              args=[document_key, downloaded, skipped, failed, TTL_S])
        counters = _as_dict(flat)
        first = bool(counters.pop("_first"))
        return first, Progress(counters, bool(counters.pop("scan_done", 0)))

    def mark_scan_done(self, job_id: str) -> Progress:
        progress_key = self._keys(job_id)["progress"]
        pipe = self.redis.pipeline()
        pipe.hset(progress_key, "scan_done", 1)
        pipe.expire(progress_key, TTL_S)
        pipe.hgetall(progress_key)
        counters = _as_dict([x for kv in pipe.execute()[-1].items() for x in kv])
        return Progress(counters, bool(counters.pop("scan_done", 0)))

    def current(self, job_id: str) -> Progress:
        raw = self.redis.hgetall(self._keys(job_id)["progress"])
        counters = _as_dict([x for kv in raw.items() for x in kv])
        return Progress(counters, bool(counters.pop("scan_done", 0)))
