"""The trash subcommands of `images-service` (contract §15): trash, restore, purge.

Clients of the trash API, like the other client commands (images_service/client/commands.py):
same ``IMAGES_SERVICE_URL`` / ``API_KEY``, API errors on stderr with exit status 2.

``purge`` removes files for good, so it asks first. On a terminal (stdin and stderr both
one) it shows what it will do and waits for ``y``; ``--yes`` skips the question (scripts).
Without a terminal and without ``--yes`` it refuses at once (exit 2, nothing removed) rather
than wait for an answer nobody can type: a pipeline must say ``--yes`` on purpose. An answer
other than ``y``/``yes`` (or end of input) removes nothing and exits 1.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Mapping
from typing import Any

from images_service.client import format as fmt
from images_service.client.commands import EXIT_OK, UsageError, print_listing
from images_service.client.commands import _path as path
from images_service.client.http import ApiClient

#: Exit status when a purge was not confirmed (nothing removed).
EXIT_NOT_CONFIRMED = 1


class NotConfirmed(UsageError):
    """A purge asked on no terminal without ``--yes``: refused before any request (exit 2)."""


def trash_rows(items: list[Mapping[str, Any]]) -> list[str]:
    """`images-service trash`: one tab-separated line per trashed folder (folder, document
    id, deleted at, images). Folder names and ids come from documents: escaped."""
    return ["\t".join(fmt.printable("-" if item.get(name) is None else item.get(name))
                      for name in ("folder", "document_id", "deleted_at", "images"))
            for item in items]


def cmd_trash(client: ApiClient, args: argparse.Namespace) -> int:
    result = client.get(path("trash", args.database, args.collection))

    def closing(listed: Mapping[str, Any]) -> str:
        count = len(listed["items"])
        return fmt.printable(f"{count} trashed folder{'' if count == 1 else 's'} in "
                             f"{args.database}.{args.collection}")

    print_listing(result, args, "FOLDER\tDOCUMENT\tDELETED AT\tIMAGES",
                  lambda listed: trash_rows(listed["items"]), closing)
    return EXIT_OK


def cmd_restore(client: ApiClient, args: argparse.Namespace) -> int:
    result = client.post(path("trash", args.database, args.collection, args.folder, "restore"))
    print(fmt.printable(f"restored {result['restored']} to {args.database}/{args.collection}/"))
    return EXIT_OK


def confirmed(question: str, *, stdin: Any = None, stderr: Any = None) -> bool:
    """Ask ``question`` on the terminal; True for ``y``/``yes``. Raises NotConfirmed when
    there is no terminal to ask on."""
    stdin, stderr = stdin or sys.stdin, stderr or sys.stderr
    if not (stdin.isatty() and stderr.isatty()):
        raise NotConfirmed("purge asks for confirmation on a terminal: none here, so nothing "
                           "was removed (pass --yes to purge without asking)")
    stderr.write(f"{question} [y/N] ")
    stderr.flush()
    answer = stdin.readline()
    return answer.strip().lower() in ("y", "yes")


def cmd_purge(client: ApiClient, args: argparse.Namespace) -> int:
    scope = f"document {args.document_id} of {args.database}.{args.collection}"
    if not args.yes and not confirmed(fmt.printable(
            f"Remove every image of {scope} for good (its folder, variants and any trashed "
            "copy)?")):
        print(fmt.printable(f"not purged: nothing of {scope} was removed"), file=sys.stderr)
        return EXIT_NOT_CONFIRMED
    result = client.delete(path("documents", args.database, args.collection, args.document_id,
                                "images"))
    removed = result["removed"]
    print(fmt.printable(f"purged {scope}: {removed} file{'' if removed == 1 else 's'} removed"))
    return EXIT_OK


def add_trash_commands(command: Callable[..., argparse.ArgumentParser]) -> None:
    """Register trash, restore and purge with the client commands' ``command`` helper."""
    listing = command("trash", cmd_trash,
                      "list the trashed folders of a collection (deleted documents)")
    listing.add_argument("database")
    listing.add_argument("collection")
    listing.add_argument("--json", action="store_true", help="print the api's JSON")

    restore = command("restore", cmd_restore,
                      "move a trashed folder back into the tree")
    restore.add_argument("database")
    restore.add_argument("collection")
    restore.add_argument("folder", metavar="FOLDER", help="the folder's name, as `trash` lists it")

    purge = command("purge", cmd_purge,
                    "remove a document's images for good, trashed copies included (asks first)")
    purge.add_argument("database")
    purge.add_argument("collection")
    purge.add_argument("document_id", metavar="ID")
    purge.add_argument("--yes", action="store_true",
                       help="do not ask (needed without a terminal, where purge refuses)")
