"""The service's own Prometheus metrics (contract §9), shared by worker, listener and api.

prometheus_client metrics are process-wide by design (like the Dramatiq broker, the one
accepted kind of global); in multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``) the values of
every worker process are summed at scrape time. Labels take only bounded values: a result,
an error code, a job type or status, an operation — never a URL or a document.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

DOWNLOADS = Counter(
    "images_downloads", "Image download outcomes", ["result"]
)  # result: downloaded | skipped | failed | retried
DOWNLOAD_ERRORS = Counter("images_download_errors", "Failed download attempts by code", ["code"])
DOWNLOAD_BYTES = Counter("images_download_bytes", "Bytes of images downloaded and stored")
DOWNLOAD_SECONDS = Histogram(
    "images_download_seconds", "Duration of one download attempt (fetch, validate, store)",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
SLOT_WAIT_SECONDS = Histogram(
    "images_slot_wait_seconds", "Time spent waiting for a fleet/host download slot",
    buckets=(0.001, 0.01, 0.05, 0.1, 0.5, 1, 5, 30),
)
JOBS = Counter("images_jobs", "Jobs created and finished", ["type", "status"])
DOCUMENTS = Counter("images_documents", "Documents finished", ["status"])

LISTENER_EVENTS = Counter("images_listener_events", "Change events seen", ["operation"])
LISTENER_DECISIONS = Counter(
    "images_listener_decisions", "What the listener did with events and scanned documents",
    ["outcome"],
)  # outcome: matched | enqueued | deduplicated | ignored
LISTENER_LAG = Gauge(
    "images_listener_lag_seconds", "Now minus the cluster time of the last event handled",
    multiprocess_mode="max",
)
LISTENER_CHECKPOINT_AGE = Gauge(
    "images_listener_checkpoint_age_seconds", "Seconds since the resume token was last saved",
    multiprocess_mode="max",
)
LISTENER_LEADER = Gauge(
    "images_listener_leader", "1 while this listener holds the leader lease",
    multiprocess_mode="max",
)
LISTENER_RECONNECTS = Counter("images_listener_reconnects", "Streams reopened after an error")
LISTENER_RESCANS = Counter("images_listener_rescans", "Catch-up scans run", ["reason"])
QUEUE_MESSAGES = Gauge(
    "images_queue_messages", "Messages waiting in the broker", ["queue", "state"],
    multiprocess_mode="max",
)
#: Derived images (contract §12); ``variant`` takes the configured names only (bounded).
PROCESSED = Counter(
    "images_processed", "Derived images by variant and result", ["variant", "result"],
)  # result: made | failed (recorded processing_failed) | removed (file deleted)
PROCESSING_SECONDS = Histogram(
    "images_processing_seconds",
    "Time to make every variant of one image (download: with the validation decode they "
    "share; stored: from the stored original, reading it included)",
    ["source"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)

# Integrity (contract §14).
STALE_MESSAGES = Counter(
    "images_stale_messages",
    "Download or retry work dropped as stale (its job ended, or a newer plan wrote the folder), "
    "counted per document of a message",
)
METADATA_CONFLICTS = Counter(
    "images_metadata_conflicts",
    "metadata.json writes redone because the file changed since it was read",
)
WRITEBACK_FAILURES = Counter(
    "images_writeback_failures", "Documents whose write-back MongoDB refused",
)

# The tree follows its documents (contract §15).
TRASH = Counter("images_trash", "Trash actions", ["action"])  # trashed restored purged expired
RECONCILE = Counter("images_reconcile", "Reconcile actions", ["action"])
IMAGES_MOVED = Counter(
    "images_moved", "Stored images copied to a new index of their document (a reordered URL "
    "list), with no request",
)

# Freshness (contract §16).
COPIED = Counter("images_copied", "Images copied from a stored copy instead of requested")
REFRESH = Counter("images_refresh", "Re-check outcomes", ["result"])
# Politeness toward image hosts (contract §17).
HOST_PAUSES = Counter(
    "images_host_pauses",
    "Pauses of a host started fleet-wide (retry_after: a 429/503; breaker: consecutive failures)",
    ["reason"],
)
REQUESTS_TO_PAUSED_HOSTS = Counter(
    "images_requests_to_paused_hosts",
    "Requests started to a host while it was paused (an invariant: stays 0)",
)
ROBOTS = Counter(
    "images_robots",
    "robots.txt outcomes: fetched (parsed), allow_all (4xx), unreachable (5xx or no answer), "
    "disallowed (an image refused)",
    ["result"],
)
PAUSED_HOSTS = Gauge(
    "images_paused_hosts", "Hosts paused fleet-wide now (retry_after or breaker)",
    multiprocess_mode="max",
)

# What an image shows (contract §18): each image counted once, when a metadata.json write
# first marks it (images_service/download/folder.py).
PLACEHOLDERS = Counter(
    "images_placeholders", "Stored images first recorded as placeholders", ["reason"],
)  # reason: tiny | blank | known
DUPLICATES = Counter(
    "images_duplicates", "Stored images first recorded as near-duplicates of an earlier image "
    "of their document",
)
