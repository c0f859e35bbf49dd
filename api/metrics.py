"""Prometheus metrics of the api via prometheus-flask-exporter, at ``/api/v1/metrics``.

Under gunicorn with several workers the exporter runs in multiprocess mode: the ``api``
command creates (and wipes) the directory named by ``PROMETHEUS_MULTIPROC_DIR`` before the
workers fork, and the gunicorn config marks dead workers. Requests are grouped by URL rule
so no label ever takes a per-document or per-job value.
"""

from __future__ import annotations

import os

from flask import Flask
from prometheus_client import CollectorRegistry
from prometheus_flask_exporter import PrometheusMetrics

from images_service import __version__

METRICS_PATH = "/api/v1/metrics"


def multiprocess_dir() -> str | None:
    # prometheus_client's own switch for multiprocess mode, set by `images-service api`.
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def init_metrics(app: Flask) -> PrometheusMetrics:
    if multiprocess_dir():
        from prometheus_flask_exporter.multiprocess import GunicornInternalPrometheusMetrics

        metrics = GunicornInternalPrometheusMetrics(app, path=METRICS_PATH, group_by="url_rule")
    else:
        # One registry per app keeps several apps in one process (tests) from clashing.
        metrics = PrometheusMetrics(
            app, path=METRICS_PATH, group_by="url_rule", registry=CollectorRegistry()
        )
    metrics.info("images_service_api_info", "images-service api", version=__version__)
    return metrics
