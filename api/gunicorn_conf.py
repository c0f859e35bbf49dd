"""gunicorn configuration of the api (`images-service api` passes it with ``-c``).

Sizing and port come from the settings the CLI exported to the environment; graceful
shutdown gives in-flight requests ``graceful_timeout`` seconds after SIGTERM, well inside
the 30 s the contract allows.
"""

import os

bind = f"{os.environ.get('API_BIND_HOST', '0.0.0.0')}:{os.environ.get('PORT', '8001')}"
workers = int(os.environ.get("API_WORKERS", "2"))
threads = 4
worker_class = "gthread"
timeout = 30
graceful_timeout = 20
keepalive = 5
accesslog = None
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info").lower()
# Each worker builds its own app (and MongoDB/Redis clients) after the fork.
preload_app = False


def child_exit(server, worker):
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_flask_exporter.multiprocess import GunicornInternalPrometheusMetrics

        GunicornInternalPrometheusMetrics.mark_process_dead_on_child_exit(worker.pid)
