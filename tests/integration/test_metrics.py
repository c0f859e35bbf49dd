"""Prometheus metrics move after real work, and every exposition parses (contract §9)."""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from images_service.dev.embedded import free_port
from tests.support.pipeline import KEY, api_client, source_db, wait_job
from tests.support.processes import kill_group, service_command, spawn, wait_http_json


def scrape(url: str) -> dict[str, list]:
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    families = {}
    for family in text_string_to_metric_families(text):
        families[family.name] = family.samples
    return families


def value(families, sample_name: str, **labels) -> float:
    total = 0.0
    for samples in families.values():
        for s in samples:
            if s.name == sample_name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


def test_worker_exports_download_job_queue_and_dramatiq_metrics(make_settings, start_worker, image_server):
    settings = make_settings({"ALLOW_PRIVATE_NETWORKS": "true", "API_RATE_LIMIT": "100000/minute"})
    db = source_db(settings)
    db.hotels.drop()
    db.hotels.insert_many([{"name": f"m{i}", "images": [image_server.url(f"/image/JPEG/m{i}"),
                                                         image_server.url("/status/404")]}
                           for i in range(3)])
    worker = start_worker(settings)
    client = api_client(settings)
    wait_job(client, client.post("/api/v1/download/collection/serpy_db/hotels").json["job_id"])
    url = f"http://127.0.0.1:{worker.metrics_port}/metrics"
    families = scrape(url)
    assert value(families, "images_downloads_total", result="downloaded") == 3
    assert value(families, "images_downloads_total", result="failed") == 3
    assert value(families, "images_download_errors_total", code="http_404") == 3
    assert value(families, "images_download_bytes_total") > 0
    assert value(families, "images_download_seconds_count") == 3
    assert value(families, "images_jobs_total", type="collection", status="completed") == 1
    assert value(families, "dramatiq_messages_total") >= 2
    assert "images_queue_messages" in families
    # no label takes a per-URL or per-document value
    for samples in families.values():
        for s in samples:
            assert not any("http://" in str(v) or "/image/" in str(v) for v in s.labels.values())


def test_api_metrics_under_gunicorn_group_by_rule(mongo_uri, redis_url, tmp_path):
    port = free_port()
    env = {"MONGODB_URI": mongo_uri, "REDIS_URL": redis_url, "API_KEY": KEY,
           "STORAGE_PATH": str(tmp_path / "images"), "API_WORKERS": "2"}
    proc = spawn(service_command("api", "--host", "127.0.0.1", "--port", str(port)), env,
                 tmp_path, tmp_path / "api.log")
    try:
        wait_http_json(f"http://127.0.0.1:{port}/api/v1/health", proc=proc)
        for job in ("a" * 10, "b" * 10, "c" * 10):
            wait_http_json(f"http://127.0.0.1:{port}/api/v1/jobs/{job}", headers={"X-API-Key": KEY})
        families = scrape(f"http://127.0.0.1:{port}/api/v1/metrics")
        samples = [s for s in families["flask_http_request_duration_seconds"]
                   if s.name.endswith("_count")]
        paths = {s.labels["url_rule"] for s in samples}
        assert "/api/v1/jobs/<job_id>" in paths  # grouped by rule, not by path
        assert not any("aaaaaaaaaa" in p for p in paths)
        assert value(families, "flask_http_request_duration_seconds_count",
                     url_rule="/api/v1/jobs/<job_id>") == 3
        assert value(families, "flask_http_request_total") >= 4
    finally:
        kill_group(proc)
