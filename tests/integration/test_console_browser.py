"""The web console in a real browser: headless Debian Chromium (Playwright) against the api on
a loopback HTTP server, a real worker subprocess, Redis, nx-27017 and the image server.

One browser and one stack per module; each test signs in a fresh browser context and works on
a collection of its own.
"""

from __future__ import annotations

import time
from pathlib import Path

import dramatiq
from PIL import Image
from pymongo import MongoClient

from images_service.jobs.store import JobStore
from images_service.queueing.broker import build_broker
from images_service.queueing.messages import SCAN_ACTOR, SCAN_QUEUE
from tests.support.console import DESKTOP, PageProblems, csrf_token, shot, sign_in
from tests.support.pipeline import source_db, wait_job
from tests.support.scenes import encode, scene

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _hotels(stack, collection: str, image_server, count: int, images: int, query: str = ""):
    db = source_db(stack.settings)
    db[collection].drop()
    db[collection].insert_many([
        {"name": f"Hotel {i}", "images": [
            image_server.url(f"/image/{'JPEG' if j % 2 else 'PNG'}/{collection}-{i}-{j}"
                             f"?w=160&h=120&seed={i * 10 + j}{query}") for j in range(images)]}
        for i in range(count)])


def _start(stack, collection: str) -> str:
    response = stack.api().post(f"/api/v1/download/collection/serpy_db/{collection}")
    assert response.status_code == 202, response.json
    return response.json["job_id"]


def _bar(page, row_selector: str, name: str) -> tuple[float, float, str]:
    bar = page.locator(f'{row_selector} [data-bar="{name}"]')
    text = page.locator(f'{row_selector} [data-text="{name}"]').inner_text()
    return float(bar.get_attribute("value")), float(bar.get_attribute("max")), text


def test_a_running_jobs_progress_bar_moves_to_100_percent(page, console_stack, image_server):
    # Given a job whose images each take 0.3 s to arrive
    _hotels(console_stack, "progress_hotels", image_server, count=6, images=4, query="&delay=0.3")
    job_id = _start(console_stack, "progress_hotels")

    # When the jobs page is open while it runs (served with the console's CSP)
    response = page.goto(console_stack.url("/ui/"))
    assert "default-src 'self'" in response.headers["content-security-policy"]
    assert response.headers["x-frame-options"] == "DENY"
    row = f'tr:has(a[title="{job_id}"])'
    value, maximum, _ = _bar(page, row, "images")
    assert value < maximum or maximum <= 1, "the job should still be running"
    page.evaluate("window.__same_page = true")

    # Then its bars reach 100 % in place (refreshed by the script, no reload)
    page.wait_for_function(
        """row => { const el = document.querySelector(row + ' [data-text="images"]');
                    return el && el.textContent.includes('24 of 24 images (100 %)'); }""",
        arg=row, timeout=30_000)
    assert page.evaluate("window.__same_page") is True
    assert _bar(page, row, "images")[:2] == (24, 24)
    assert _bar(page, row, "documents") == (6, 6, "6 of 6 documents (100 %)")
    page.wait_for_function(
        "row => document.querySelector(row + ' [data-status]').textContent === 'completed'",
        arg=row)
    shot(page, console_stack, "jobs")


def test_a_jobs_page_shows_a_thumbnail_of_every_image(page, console_stack, image_server):
    # Given a completed job of 3 hotels with 3 images each, one of them missing
    _hotels(console_stack, "thumb_hotels", image_server, count=3, images=3)
    db = source_db(console_stack.settings)
    db.thumb_hotels.update_one({"name": "Hotel 0"},
                               {"$push": {"images": image_server.url("/status/404")}})
    job_id = _start(console_stack, "thumb_hotels")
    assert wait_job(console_stack.api(), job_id)["status"] == "completed"

    # When its page is opened
    page.goto(console_stack.url(f"/ui/jobs/{job_id}"))

    # Then every downloaded image has a loaded thumbnail, and the failure its code
    images = page.locator(".thumbs img")
    assert images.count() == 9
    page.wait_for_function(
        "() => [...document.images].every(img => img.complete && img.naturalWidth > 0)")
    widths = page.evaluate("[...document.querySelectorAll('.thumbs img')].map(i => i.naturalWidth)")
    assert widths == [160] * 9
    assert page.locator(".thumbs figcaption code", has_text="http_404").count() == 1
    assert page.locator("table code", has_text="http_404").count() == 1  # the job's errors
    shot(page, console_stack, "job", DOCS / "console-job.png")


def test_placeholders_and_duplicates_are_shown_apart(page, console_stack, image_server):
    # Given a hotel with two photos, a tracking pixel, a blank frame and a smaller copy of
    # its first photo (contract §18)
    photo = scene(5, (320, 240))
    served = {
        "/apart/photo.jpg": encode(photo, "JPEG", quality=90),
        "/apart/pixel.gif": encode(Image.new("RGB", (1, 1), (255, 255, 255)), "GIF"),
        "/apart/blank.png": encode(Image.new("RGB", (200, 150), (250, 250, 250)), "PNG"),
        "/apart/copy.jpg": encode(photo.resize((160, 120)), "JPEG", quality=75),
        "/apart/other.jpg": encode(scene(6, (320, 240)), "JPEG", quality=90),
    }
    types = {"jpg": "image/jpeg", "gif": "image/gif", "png": "image/png"}
    for path, body in served.items():
        image_server.set_response(path, 200, body, {"Content-Type": types[path[-3:]]})
    db = source_db(console_stack.settings)
    db.apart_hotels.drop()
    db.apart_hotels.insert_one({"name": "Hotel Apart",
                                "images": [image_server.url(path) for path in served]})
    job_id = _start(console_stack, "apart_hotels")
    assert wait_job(console_stack.api(), job_id)["status"] == "completed"

    # When its page is opened
    page.goto(console_stack.url(f"/ui/jobs/{job_id}"))

    # Then the photos are shown first, the others apart, greyed, each with its reason
    shown = page.locator("ul.thumbs:not(.apart) figcaption")
    assert [text.split()[0] for text in shown.all_inner_texts()] == ["#1", "#5"]
    apart = page.locator("ul.thumbs.apart figcaption").all_inner_texts()
    assert apart == ["#2 placeholder: tiny", "#3 placeholder: blank", "#4 duplicate of #1"]
    assert page.get_by_text("Set apart: placeholders and near-duplicates").is_visible()
    assert "2 placeholders, 1 near-duplicate" in page.locator(".document .hint").inner_text()
    filters = page.evaluate(
        "[...document.querySelectorAll('.thumbs img')].map(i => getComputedStyle(i).filter)")
    assert filters[:2] == ["none", "none"] and all("grayscale" in f for f in filters[2:])
    page.wait_for_function(
        "() => [...document.images].every(img => img.complete && img.naturalWidth > 0)")
    shot(page, console_stack, "job-apart")


def test_cancel_a_running_job_then_retry_it(page, console_stack, image_server):
    # Given a job that runs for a while (40 images of 1 s each, 4 at a time)
    _hotels(console_stack, "slow_hotels", image_server, count=10, images=4, query="&delay=1")
    job_id = _start(console_stack, "slow_hotels")
    page.goto(console_stack.url(f"/ui/jobs/{job_id}"))

    # When it is cancelled from its page
    page.get_by_role("button", name="Cancel job").click()

    # Then it is cancelled, and the page offers a retry instead
    page.get_by_text(f"Job {job_id} cancelled.").wait_for()
    assert console_stack.api().get(f"/api/v1/jobs/{job_id}").json["status"] == "cancelled"
    assert page.locator("[data-status]").first.inner_text() == "cancelled"
    shot(page, console_stack, "job-cancelled")

    # When the finished job is retried (its images now answer at once)
    image_server.reset()
    page.get_by_role("button", name="Retry job").click()

    # Then a new job of the same scope runs to completion, its page naming the original
    page.get_by_text(f"Retry of job {job_id} started.").wait_for()
    page.get_by_role("link", name=f"{job_id[:8]}…").wait_for()
    new_id = page.url.rsplit("/", 1)[1]
    assert new_id != job_id
    job = wait_job(console_stack.api(), new_id, timeout_s=90)
    assert (job["status"], job["retry_of"], job["progress"]["documents_done"]) == (
        "completed", job_id, 10)
    # the page reloads itself once the job ends
    page.get_by_role("button", name="Retry job").wait_for(timeout=30_000)


def test_redrive_from_the_queues_page(page, console_stack, image_server):
    # Given a dead-lettered scan message: its filter passes the allow-list but the server
    # refuses it ($mod by 0), and the message allows no retry
    settings = console_stack.settings
    db = source_db(settings)
    db.redrive_hotels.drop()
    db.redrive_hotels.insert_one({"_id": "r-1", "name": "Ritz",
                                  "images": [image_server.url("/image/PNG/redrive")]})
    jobs = JobStore(MongoClient(settings.mongodb_uri), settings.jobs_database)
    job_id = jobs.create("collection", "serpy_db", "redrive_hotels",
                         filter={"x": {"$mod": [0, 0]}})["_id"]
    build_broker(settings, producer=True).enqueue(dramatiq.Message(
        queue_name=SCAN_QUEUE, actor_name=SCAN_ACTOR, args=(job_id,), kwargs={},
        options={"max_retries": 0}))
    redrive = page.get_by_role("button", name=f"Redrive 1 dead messages of {SCAN_QUEUE}")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        page.goto(console_stack.url("/ui/queues"))
        if redrive.count():
            break
        time.sleep(0.2)
    assert redrive.count() == 1, console_stack.worker.log.read_text()[-2000:]
    assert page.get_by_text("1 worker process seen in the last minute").count() == 1
    shot(page, console_stack, "queues")

    # When the cause is fixed and the queue redriven from the page (the worker recorded the
    # job as failed when its message died: contract §10)
    jobs.collection.update_one({"_id": job_id}, {"$set": {"filter_json": '{"name": "Ritz"}'}})
    redrive.click()

    # Then the message is enqueued again and runs (acked: a no-op for its ended job, which a
    # retry redoes); nothing is left dead
    page.get_by_text(f"1 dead-lettered message of {SCAN_QUEUE} enqueued again.").wait_for()
    assert page.get_by_role("button", name=f"Redrive 1 dead messages of {SCAN_QUEUE}").count() == 0
    api = console_stack.api()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        depth = {q["name"]: q for q in api.get("/api/v1/queues").json["queues"]}[SCAN_QUEUE]
        if depth["ready"] == 0 and depth["dead"] == 0:
            break
        time.sleep(0.1)
    assert depth["ready"] == 0 and depth["dead"] == 0
    assert api.get(f"/api/v1/jobs/{job_id}").json["status"] == "failed"  # never revived


def test_the_listener_page_shows_what_the_listener_saved(page, console_stack):
    import redis

    from workers.listener.checkpoint import StateStore
    from workers.listener.lease import Lease

    # Given a leader holding the lease and two saved checkpoints, one with a MongoDB token
    settings = console_stack.settings
    lease = Lease(redis.Redis.from_url(settings.redis_url), settings.jobs_database)
    assert lease.try_acquire()
    state = StateStore(MongoClient(settings.mongodb_uri), settings.jobs_database)
    state.fence(lease.epoch)
    cluster_s = int(time.time()) - 42
    state.save_token("serpy_db.hotels", {"_data": f"82{cluster_s:08X}00000001" + "2B" * 8},
                     lease.epoch)
    state.save_token("serpy_db.restaurants", {"_data": "nx:17"}, lease.epoch)
    try:
        page.goto(console_stack.url("/ui/listener"))
        facts = page.locator(".facts").inner_text()
        assert "present" in facts and f"Epoch\n{lease.epoch}" in facts.replace("\t", "\n")
        rows = page.locator("tbody tr")
        assert rows.count() == 2
        hotels = rows.nth(0).inner_text()
        assert "serpy_db.hotels" in hotels and "unknown" not in hotels
        lag_s = float(rows.nth(0).locator("td").nth(1).inner_text().removesuffix(" s"))
        assert 41 <= lag_s <= 60
        assert "unknown" in rows.nth(1).inner_text()
        shot(page, console_stack, "listener")
    finally:
        lease.release()


def test_without_a_session_pages_redirect_and_actions_are_refused(browser, console_stack):
    context = browser.new_context(viewport=DESKTOP)
    page = context.new_page()
    source_db(console_stack.settings).nosession.insert_one({"name": "x", "images": []})
    job = console_stack.api().post("/api/v1/download/collection/serpy_db/nosession").json
    for path in ("/ui/", "/ui/queues", "/ui/listener", f"/ui/jobs/{job['job_id']}"):
        page.goto(console_stack.url(path))
        assert "/ui/sign-in?next=" in page.url, path
        assert page.get_by_label("API key").count() == 1
    response = context.request.post(console_stack.url(f"/ui/jobs/{job['job_id']}/cancel"),
                                    max_redirects=0)
    assert response.status == 401
    assert context.request.get(console_stack.url("/ui/progress.json")).status == 401

    # A wrong key is refused with a message
    sign_in(page, console_stack, key="wrong-key-000000")
    assert page.get_by_role("alert").inner_text() == "That API key is not accepted."
    shot(page, console_stack, "sign-in")

    # Signed in, a form posted without its CSRF token is refused too
    sign_in(page, console_stack)
    assert page.url.endswith("/ui/")
    bad = context.request.post(console_stack.url(f"/ui/jobs/{job['job_id']}/cancel"),
                               form={"csrf_token": "forged"}, max_redirects=0)
    assert bad.status == 400
    none = context.request.post(console_stack.url(f"/ui/jobs/{job['job_id']}/cancel"),
                                max_redirects=0)
    assert none.status == 400
    assert console_stack.api().get(f"/api/v1/jobs/{job['job_id']}").json["status"] != "cancelled"
    # while the page's own token works
    page.goto(console_stack.url(f"/ui/jobs/{job['job_id']}"))
    good = context.request.post(console_stack.url(f"/ui/jobs/{job['job_id']}/cancel"),
                                form={"csrf_token": csrf_token(page.content())}, max_redirects=0)
    assert good.status == 303

    # The cookie is HttpOnly, SameSite=Strict, Secure (ENVIRONMENT=production), path /ui
    (cookie,) = context.cookies()
    assert (cookie["httpOnly"], cookie["sameSite"], cookie["secure"], cookie["path"]) == (
        True, "Strict", True, "/ui")

    # Signing out ends the session
    page.get_by_role("button", name="Sign out").click()
    page.get_by_text("Signed out.").wait_for()
    page.goto(console_stack.url("/ui/queues"))
    assert "/ui/sign-in?next=/ui/queues" in page.url
    context.close()


def test_pages_fit_a_375_px_screen(browser, console_stack):
    context = browser.new_context(viewport={"width": 375, "height": 800})
    page = context.new_page()
    sign_in(page, console_stack)
    job_id = console_stack.api().get("/api/v1/jobs?limit=1").json["jobs"][0]["job_id"]
    for path in ("/ui/", f"/ui/jobs/{job_id}", "/ui/queues", "/ui/listener"):
        page.goto(console_stack.url(path))
        assert page.evaluate("document.documentElement.scrollWidth") <= 375, path
    # and on the jobs page the progress bars still get most of the width
    page.goto(console_stack.url("/ui/"))
    assert page.locator("progress").first.bounding_box()["width"] >= 300
    shot(page, console_stack, "jobs-375")
    context.close()


def test_without_javascript_a_page_with_running_jobs_reloads_itself(browser, console_stack,
                                                                   image_server):
    _hotels(console_stack, "nojs_hotels", image_server, count=2, images=2, query="&delay=3")
    _start(console_stack, "nojs_hotels")
    context = browser.new_context(viewport=DESKTOP, java_script_enabled=False)
    page = context.new_page()
    sign_in(page, console_stack)
    page.goto(console_stack.url("/ui/"))
    assert page.locator("noscript").count() == 1
    with page.expect_event("load", timeout=10_000):
        pass  # the <noscript> meta refresh reloads the page within 5 s
    # The README's picture: by now the module has left jobs of every kind
    shot(page, console_stack, "jobs-nojs", DOCS / "console-jobs.png")
    context.close()


def test_the_console_refuses_inline_scripts_and_framing(browser, console_stack):
    # Given a signed-in console page
    context = browser.new_context(viewport=DESKTOP)
    page = context.new_page()
    problems = PageProblems(page)
    sign_in(page, console_stack)
    page.goto(console_stack.url("/ui/queues"))
    # When an inline script is added to it (what an injection would do)
    csp = lambda message: "Content Security Policy" in message.text  # noqa: E731
    with page.expect_console_message(csp):
        page.evaluate("""() => { const s = document.createElement('script');
                                 s.textContent = 'window.__injected = true';
                                 document.body.appendChild(s); }""")
    # Then the CSP refuses to run it, and the watcher of the other tests sees such a refusal
    assert page.evaluate("window.__injected === undefined")
    assert problems.csp and not problems.script_errors

    # When a page of another origin frames the console
    framer = context.new_page()
    with framer.expect_console_message(csp):
        framer.set_content(f'<iframe src="{console_stack.url("/ui/queues")}"></iframe>')
    # Then the browser shows no console inside it
    (frame,) = framer.frames[1:]
    assert frame.url.startswith("chrome-error://"), frame.url
    context.close()
