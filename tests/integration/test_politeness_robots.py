"""robots.txt (contract §17, RESPECT_ROBOTS_TXT) and X-Robots-Tag on the real pipeline, driven
step by step against a loopback host: groups for other agents, one fetch for the fleet,
404 and 500 robots, Crawl-delay spacing, opt-outs not retried."""

from __future__ import annotations

import time

from images_service import metrics
from images_service.queueing.messages import RETRY_ACTOR
from tests.support.image_server import make_image
from tests.support.pipeline import Rig
from tests.support.politeness import make_rig, metadata, retries

ROBOTS = """\
User-agent: otherbot
Disallow: /

User-agent: serpy-images
Disallow: /private/
Allow: /

User-agent: *
Disallow: /
"""


def serve_robots(server, text: str | None, status: int = 200) -> None:
    if text is None:
        server.set_response("/robots.txt", status, b"oops", {"Content-Type": "text/plain"})
    else:
        server.set_response("/robots.txt", status, text.encode(), {"Content-Type": "text/plain"})


def job_with(rig: Rig, doc_id: str, paths: list[str]) -> tuple[str, list[dict]]:
    rig.db.hotels.insert_one({"_id": doc_id, "name": doc_id,
                              "images": [rig.server.url(p) for p in paths]})
    return rig.document_job(doc_id)


def statuses(rig: Rig, doc_id: str) -> list[tuple[str, str | None]]:
    return [(r["status"], (r.get("error") or {}).get("code"))
            for r in sorted(metadata(rig, doc_id)["images"], key=lambda r: r["index"])]


def robots_rig(make_settings, image_server, rigs, **env: str) -> Rig:
    rig = make_rig(make_settings, image_server, RESPECT_ROBOTS_TXT="true",
                   USER_AGENT="serpy-images/1.0 (+https://serpy.example/bot)", **env)
    rigs.append(rig)
    return rig


def test_our_group_decides_and_a_disallowed_image_gets_no_request(make_settings,
                                                                  image_server, rigs):
    serve_robots(image_server, ROBOTS)
    rig = robots_rig(make_settings, image_server, rigs)
    disallowed = metrics.ROBOTS.labels("disallowed")._value.get()
    job_id, plans = job_with(rig, "r1", ["/image/JPEG/pub", "/private/x.jpg"])

    rig.pipeline.download_documents(job_id, plans)

    # /image/ is disallowed for * and otherbot but not for serpy-images; /private/ is
    assert statuses(rig, "r1") == [("downloaded", None), ("failed", "robots_disallowed")]
    assert rig.messages(RETRY_ACTOR, job_id) == []  # not retried
    assert image_server.hits("/private/x.jpg") == 0
    assert image_server.hits("/robots.txt") == 1
    robots_request = next(r for r in image_server.requests if r.path == "/robots.txt")
    assert robots_request.headers["User-Agent"].startswith("serpy-images/1.0")
    assert metrics.ROBOTS.labels("disallowed")._value.get() == disallowed + 1

    # another worker process (its own caches) reads the fleet's copy: no second fetch
    other = robots_rig(make_settings, image_server, rigs)
    job2, plans2 = job_with(other, "r2", ["/image/PNG/pub2", "/private/y.jpg"])
    other.pipeline.download_documents(job2, plans2)
    assert statuses(other, "r2") == [("downloaded", None), ("failed", "robots_disallowed")]
    assert image_server.hits("/robots.txt") == 1


def test_without_the_setting_robots_txt_is_not_read(make_settings, image_server, rigs):
    serve_robots(image_server, "User-agent: *\nDisallow: /\n")
    rig = make_rig(make_settings, image_server)
    rigs.append(rig)
    job_id, plans = job_with(rig, "r0", ["/image/JPEG/a"])
    rig.pipeline.download_documents(job_id, plans)
    assert statuses(rig, "r0") == [("downloaded", None)]
    assert image_server.hits("/robots.txt") == 0


def test_a_404_robots_allows_everything(make_settings, image_server, rigs):
    rig = robots_rig(make_settings, image_server, rigs)  # no /robots.txt: 404
    job_id, plans = job_with(rig, "r404", ["/image/JPEG/a", "/private/b"])
    rig.pipeline.download_documents(job_id, plans)
    assert statuses(rig, "r404")[0] == ("downloaded", None)
    assert statuses(rig, "r404")[1] == ("failed", "http_404")  # its own request was made
    assert image_server.hits("/robots.txt") == 1


def test_a_500_robots_allows_nothing_until_it_can_be_read_and_is_read_again_on_retry(
        make_settings, image_server, rigs):
    serve_robots(image_server, None, status=500)
    rig = robots_rig(make_settings, image_server, rigs)
    job_id, plans = job_with(rig, "r500", ["/image/JPEG/a", "/image/JPEG/b"])

    rig.pipeline.download_documents(job_id, plans)

    # no image request; both retried like a connection error (their attempt spent)
    assert image_server.hits() == 1 and image_server.hits("/robots.txt") == 1
    messages = retries(rig, job_id)
    assert [args[3] for args, _eta in messages] == [2, 2]

    # the file can be read now: the retry reads it again and downloads
    serve_robots(image_server, "User-agent: *\nAllow: /\n")
    time.sleep(0.05)  # the unreadable result is kept half the shortest backoff (25 ms)
    for args, _eta in messages:
        rig.pipeline.retry_image(*args)
    assert image_server.hits("/robots.txt") == 2
    assert statuses(rig, "r500") == [("downloaded", None), ("downloaded", None)]
    assert [r["attempts"] for r in metadata(rig, "r500")["images"]] == [2, 2]


def test_crawl_delay_spaces_the_requests_to_a_host(make_settings, image_server, rigs):
    serve_robots(image_server, "User-agent: *\nCrawl-delay: 0.3\n")
    rig = robots_rig(make_settings, image_server, rigs)
    job_id, plans = job_with(rig, "crawl", [f"/image/JPEG/c{n}" for n in range(3)])

    rig.pipeline.download_documents(job_id, plans)

    assert statuses(rig, "crawl") == [("downloaded", None)] * 3
    starts = sorted(r.at for r in image_server.requests if r.path.startswith("/image/"))
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    assert len(gaps) == 2 and min(gaps) >= 0.29, gaps


def test_a_long_crawl_delay_delays_the_image_as_a_message_capped_at_30_s(make_settings,
                                                                         image_server, rigs):
    serve_robots(image_server, "User-agent: serpy-images\nCrawl-delay: 100\n")
    rig = robots_rig(make_settings, image_server, rigs)
    job_id, plans = job_with(rig, "slowcrawl", ["/image/JPEG/s1", "/image/JPEG/s2"])

    rig.pipeline.download_documents(job_id, plans)

    assert image_server.hits() == 2  # robots.txt and one image
    ((args, eta),) = retries(rig, job_id)
    assert args[3] == 1  # no attempt spent
    assert 29_000 <= eta - time.time() * 1000 <= 33_100


def test_an_opted_out_image_fails_and_is_not_retried(make_settings, image_server, rigs):
    rig = make_rig(make_settings, image_server, DISALLOWED_HEADER_DIRECTIVES="noai",
                   USER_AGENT="serpy-images/1.0")
    rigs.append(rig)
    for path, tag in (("/t/ours", "serpy-images: noai"), ("/t/all", "noai"),
                      ("/t/other", "otherbot: noai")):
        image_server.set_response(path, 200, make_image("JPEG"),
                                  {"Content-Type": "image/jpeg", "X-Robots-Tag": tag})
    job_id, plans = job_with(rig, "tags", ["/t/ours", "/t/all", "/t/other"])
    rig.pipeline.download_documents(job_id, plans)
    assert statuses(rig, "tags") == [("failed", "opted_out"), ("failed", "opted_out"),
                                     ("downloaded", None)]
    assert rig.messages(RETRY_ACTOR, job_id) == []
    assert rig.job(job_id)["status"] == "completed"


def test_robots_txt_is_fetched_through_the_ssrf_guard(make_settings, image_server, rigs):
    serve_robots(image_server, "User-agent: *\nAllow: /\n")
    rig = robots_rig(make_settings, image_server, rigs, ALLOW_PRIVATE_NETWORKS="false")
    job_id, plans = job_with(rig, "guarded", ["/image/JPEG/g"])
    rig.pipeline.download_documents(job_id, plans)
    # the loopback host is refused before any connection: not even robots.txt is requested
    assert statuses(rig, "guarded") == [("failed", "blocked_address")]
    assert image_server.hits() == 0
