"""When a message cannot finish its work: requeued on shutdown, or its job ends as failed.

Two ways a message stops short, two rules (contract §10):

- **The worker is shutting down** (SIGTERM): the pipeline raises
  :class:`~workers.pipeline.context.WorkerShuttingDown` before starting new work;
  :func:`requeue_on_shutdown` sends the same message again, keeping its Dramatiq retry count,
  and lets the current one be acked. Another worker does the rest; nothing is recorded as
  failed and no retry is spent. (Raising instead would go through the Retries middleware:
  a retry spent, and a shutdown could exhaust a message.)
- **Retries exhausted**: Dramatiq's Retries middleware dead-letters a message that raised
  ``MAX_RETRIES`` + 1 times and sends it to the ``on_retry_exhausted`` actor (a built-in
  hook: no custom middleware needed), which calls :func:`fail_exhausted_job`: the job ends
  ``failed`` with the last exception's message, since its work can no longer complete.

What neither hook sees (messages deleted from Redis, a worker that died while sending the
exhausted notice) is left to the sweeper (workers/sweeper.py).
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Any, Iterator

import dramatiq
from dramatiq.middleware import CurrentMessage

from workers.pipeline import DownloadPipeline
from workers.pipeline.context import WorkerShuttingDown

log = logging.getLogger(__name__)

#: The failure message kept on the job is cut to this many characters.
MAX_MESSAGE_CHARS = 500


@contextmanager
def requeue_on_shutdown() -> Iterator[None]:
    """Run an actor's body; on WorkerShuttingDown, enqueue its message again unchanged."""
    try:
        yield
    except WorkerShuttingDown:
        message = CurrentMessage.get_current_message()
        if message is None:
            raise
        # The Redis broker gives every enqueue a fresh redis_message_id, so the copy is safe
        # to send while the original is still unacked (Retries does the same).
        dramatiq.get_broker().enqueue(message.copy())
        log.info("worker shutting down: message %s (%s) requeued", message.message_id,
                 message.actor_name, extra={"job_id": _job_id(message.args)})


def _job_id(args: Any) -> str | None:
    return args[0] if args and isinstance(args[0], str) else None


def exhausted_reason(message: dict[str, Any], retries: int) -> str:
    """A short message for the job: which step failed, how often, the last error line."""
    lines = [ln.strip() for ln in str(message.get("options", {}).get("traceback") or "")
             .splitlines() if ln.strip()]
    error = lines[-1] if lines else "unknown error"
    text = (f"{message.get('actor_name', 'a step')} failed {retries + 1} times "
            f"(retries exhausted): {error}")
    return text[:MAX_MESSAGE_CHARS]


def fail_exhausted_job(pipeline: DownloadPipeline, message: dict[str, Any],
                       retries: int) -> None:
    """End the job of a message whose retries are exhausted as failed (idempotent)."""
    job_id = _job_id(message.get("args"))
    if job_id is None:
        log.warning("exhausted message %s names no job", message.get("message_id"))
        return
    job = pipeline.ctx.jobs.get(job_id)
    if job is None:
        pipeline.ctx.progress.forget(job_id)
        return
    pipeline.finisher.finish_job(job, "failed", message=exhausted_reason(message, retries))
