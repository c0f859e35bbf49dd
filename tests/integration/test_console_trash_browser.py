"""The console's trash in a real browser (contract §15): headless Debian Chromium (Playwright)
against the api on a loopback HTTP server, a real worker, Redis, nx-27017 and the image server
(the stack of tests/support/console.py). A document downloaded by a real job is deleted, its
folder trashed, restored with the trash page's button, then purged through the confirmation
page, under the console's Content-Security-Policy."""

from __future__ import annotations

from images_service.storage import trash
from images_service.storage.factory import create_storage
from tests.support.console import shot, sign_in
from tests.support.pipeline import source_db, wait_job


def test_restore_from_the_trash_page_then_purge_after_confirming(page, console_stack,
                                                                 image_server):
    stack = console_stack
    db = source_db(stack.settings)
    db.trash_hotels.drop()
    db.trash_hotels.insert_one({"_id": "t1", "name": "Hotel Trash", "images": [
        image_server.url("/image/JPEG/trash-1?w=160&h=120"),
        image_server.url("/image/PNG/trash-2?w=160&h=120")]})
    response = stack.api().post("/api/v1/download/collection/serpy_db/trash_hotels")
    assert wait_job(stack.api(), response.json["job_id"])["status"] == "completed"
    storage = create_storage(stack.settings)
    folder = "serpy_db/trash_hotels/t1-hotel-trash"
    files = sorted(storage.list(folder))

    # The job's document links to its page, which shows its images and a purge link
    page.goto(stack.url(f"/ui/jobs/{response.json['job_id']}"))
    page.get_by_role("link", name="t1", exact=True).click()
    page.wait_for_function(
        "() => document.images.length == 2 && "
        "[...document.images].every(img => img.complete && img.naturalWidth > 0)")
    assert page.get_by_role("link", name="Purge…").count() == 1
    shot(page, stack, "document")

    # Given the document deleted and its folder trashed (as the listener's actor does)
    db.trash_hotels.delete_one({"_id": "t1"})
    trash.trash_folder(storage, folder)

    # When the trash page is opened from the menu and Restore is pressed
    page.get_by_role("link", name="Trash", exact=True).click()
    page.get_by_role("link", name="serpy_db.trash_hotels").click()
    assert page.locator('tr[data-folder="t1-hotel-trash"]').count() == 1
    shot(page, stack, "trash")
    page.get_by_role("button", name="Restore t1-hotel-trash").click()

    # Then the folder is back, files unchanged, and the page says so
    page.get_by_text("t1-hotel-trash restored").wait_for()
    assert sorted(storage.list(folder)) == files
    assert page.locator('tr[data-folder="t1-hotel-trash"]').count() == 0

    # Purge: the document page's button leads to a confirmation page, whose button purges
    page.goto(stack.url("/ui/documents/serpy_db/trash_hotels/t1"))
    page.get_by_role("link", name="Purge…").click()
    page.get_by_text("It cannot be undone").wait_for()
    shot(page, stack, "purge")
    assert sorted(storage.list(folder)) == files  # nothing removed by opening the page
    page.get_by_role("button", name=f"Purge {len(files)} files").click()
    page.get_by_text(f"Document t1 purged: {len(files)} files removed").wait_for()
    assert storage.list(folder) == [] and storage.trash().list("serpy_db/trash_hotels") == []
    storage.close()


def test_the_trash_pages_fit_a_375_px_screen(browser, console_stack):
    context = browser.new_context(viewport={"width": 375, "height": 800})
    page = context.new_page()
    sign_in(page, console_stack)
    storage = create_storage(console_stack.settings)
    storage.put_bytes("serpy_db/narrow/n1-a-rather-long-hotel-name-that-wraps/metadata.json",
                      b'{"document_id": "n1", "images": []}')
    trash.trash_folder(storage, "serpy_db/narrow/n1-a-rather-long-hotel-name-that-wraps")
    for path in ("/ui/trash", "/ui/trash/serpy_db/narrow", "/ui/documents/serpy_db/narrow/n1",
                 "/ui/documents/serpy_db/narrow/n1/purge"):
        response = page.goto(console_stack.url(path))
        assert response.status == 200, path
        assert page.evaluate("document.documentElement.scrollWidth") <= 375, path
    storage.delete_prefix("serpy_db/narrow")
    storage.trash().delete_prefix("serpy_db/narrow")
    storage.close()
    context.close()
