"""The console's trash page, restore buttons and purge confirmation (contract §15), through
Flask's test client on both storage backends: session sign-in, CSRF tokens read from the
pages as a browser would send them, real nx-27017, Redis and storage."""

from __future__ import annotations

import html

from flask.testing import FlaskClient

from api import create_app
from images_service.storage import trash
from tests.support.console import csrf_token
from tests.support.pipeline import KEY, source_db

FOLDER = "serpy_db/hotels/h1-hotel-ritz"
TRASH_PAGE = "/ui/trash/serpy_db/hotels"


def _signed_in(settings) -> FlaskClient:
    client = create_app(settings).test_client()
    token = csrf_token(client.get("/ui/sign-in").text)
    response = client.post("/ui/sign-in", data={"csrf_token": token, "api_key": KEY})
    assert response.status_code == 303, response.text
    return client


def _flash(client: FlaskClient, response) -> str:
    assert response.status_code == 303, response.text
    return html.unescape(client.get(response.headers["Location"]).text)


def test_the_trash_page_lists_folders_and_restores_with_a_csrf_token(trash_stack):
    settings, _, storage, _ = trash_stack
    trash.trash_folder(storage, FOLDER)
    client = _signed_in(settings)

    # The trash index names the collection; its page lists the folder with a restore button
    assert TRASH_PAGE in client.get("/ui/trash").text
    page = client.get(TRASH_PAGE)
    assert page.status_code == 200
    assert 'data-folder="h1-hotel-ritz"' in page.text and ">Restore</button>" in page.text
    restore = f"{TRASH_PAGE}/h1-hotel-ritz/restore"

    # Without the CSRF token the form is refused and nothing moves
    refused = client.post(restore)
    assert refused.status_code == 400 and "csrf_failed" in refused.text
    assert storage.list(FOLDER) == []

    # With the page's token the folder is restored
    shown = _flash(client, client.post(restore, data={"csrf_token": csrf_token(page.text)}))
    assert "h1-hotel-ritz restored" in shown
    assert len(storage.list(FOLDER)) == 5 and storage.trash().list("") == []
    assert "Nothing of serpy_db.hotels is in the trash" in shown

    # Restoring into an occupied folder is refused with its reason, both kept
    trash.trash_folder(storage, FOLDER)
    storage.put_bytes(f"{FOLDER}/metadata.json", b'{"document_id": "h1", "images": []}')
    token = csrf_token(client.get(TRASH_PAGE).text)
    shown = _flash(client, client.post(restore, data={"csrf_token": token}))
    assert "Not restored" in shown and "folder_conflict" in shown
    assert len(storage.trash().list(FOLDER)) == 5


def test_purge_needs_the_confirmation_step(trash_stack):
    settings, _, storage, _ = trash_stack
    client = _signed_in(settings)
    document = "/ui/documents/serpy_db/hotels/h1"

    # The document page shows its images and a purge link to the confirmation page
    page = client.get(document)
    assert page.status_code == 200
    assert page.text.count("<img ") == 2
    assert f'href="{document}/purge"' in page.text

    # A POST that did not come from the confirmation page purges nothing
    token = csrf_token(page.text)
    skipped = client.post(f"{document}/purge", data={"csrf_token": token})
    assert skipped.headers["Location"] == f"{document}/purge"
    assert len(storage.list(FOLDER)) == 5

    # The confirmation page says what goes; its form purges, trash included
    trash.trash_folder(storage, FOLDER)
    source_db(settings).hotels.delete_one({"_id": "h1"})  # deleted from MongoDB too
    storage.put_bytes(f"{FOLDER}/metadata.json", b'{"document_id": "h1", "images": []}')
    confirm = client.get(f"{document}/purge")
    assert confirm.status_code == 200
    assert "6 files" in confirm.text and "the trash" in confirm.text
    shown = _flash(client, client.post(f"{document}/purge", data={
        "csrf_token": csrf_token(confirm.text), "confirm": "h1"}))
    assert "Document h1 purged: 6 files removed" in shown
    assert storage.list("serpy_db/hotels/h1-hotel-ritz") == []
    assert storage.trash().list("") == []
    assert client.get(f"{document}/purge").status_code == 404
    # h2 is untouched
    assert len(storage.list("serpy_db/hotels/h2-sea-view")) == 5


def test_trash_pages_need_a_session(trash_stack):
    settings, _, storage, _ = trash_stack
    trash.trash_folder(storage, FOLDER)
    client = create_app(settings).test_client()
    page = client.get(TRASH_PAGE)
    assert page.status_code == 302 and "/ui/sign-in" in page.headers["Location"]
    assert client.post(f"{TRASH_PAGE}/h1-hotel-ritz/restore").status_code == 401
    assert client.post("/ui/documents/serpy_db/hotels/h2/purge",
                       data={"confirm": "h2"}).status_code == 401
    assert storage.list(FOLDER) == [] and len(storage.list("serpy_db/hotels/h2-sea-view")) == 5
