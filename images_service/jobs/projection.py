"""Projections for documents whose fields are then read by dotted path, on both servers.

Scans read only the fields they need (``IMAGE_FIELDS`` or a job's ``image_fields``,
``SEARCH_FIELD``, ``STATUS_FIELD``, ``DOWNLOAD_FLAG_FIELD``), and the readers walk dotted
paths through nested documents (images_service.download.urls.get_path). nx-27017 quirk: a projection
on a dotted path (``{"media.gallery": 1}``) comes back as a flat key
``{"media.gallery": [...]}`` where MongoDB nests it, so a nested walk finds nothing there.
Projecting each path's first segment (``{"media": 1}``) comes back nested from both servers;
the price is reading the siblings of the wanted field in that subdocument.
"""

from __future__ import annotations

from collections.abc import Iterable


def top_level_projection(paths: Iterable[str]) -> dict[str, int]:
    """``{first segment: 1}`` for every dotted path in ``paths`` (empty paths ignored)."""
    roots = {path.split(".", 1)[0] for path in paths if path}
    return {root: 1 for root in sorted(roots)}
