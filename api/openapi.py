"""The OpenAPI 3 document of the api, and Swagger UI served from the swagger-ui-bundle package.

The document is written out by hand next to the views (``PATHS``) and kept honest by a test
that compares it with the app's URL map. ``/docs`` is served only in development; the page
embeds the document, so it needs no second, authenticated fetch. Swagger UI's assets come
from the ``[dev]`` extra (``swagger-ui-bundle``), imported only when ``/docs`` is asked for:
the production image does not install it, and the api runs without it.

Longer than our ~300-line modules on purpose: it is one document, mostly data, and reads best
as one table of paths next to its schemas.
"""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, Response, abort, jsonify, send_from_directory

from api.context import services
from images_service import __version__
from images_service.jobs.store import ALL_PROGRESS_FIELDS, JOB_STATUSES, JOB_TYPES

bp = Blueprint("openapi", __name__)


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def _json(description: str, schema_ref: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema_ref}"}}},
    }


UNAUTHORIZED = _error("Missing or invalid X-API-Key")
RATE_LIMITED = _error("Over the key's rate limit, or the client address is over its budget of "
                      "failed key attempts (then refused whatever the key); see Retry-After")

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
            }
        },
    },
    "Health": {
        "type": "object",
        "required": ["status", "checks"],
        "properties": {
            "status": {"type": "string", "enum": ["ok", "degraded"]},
            "checks": {
                "type": "object",
                "properties": {"mongodb": {"type": "string"}, "redis": {"type": "string"},
                               "storage": {"type": "string"}},
            },
        },
    },
}


_PROGRESS = {
    "type": "object",
    "description": "a refresh job adds images_not_modified, images_changed, images_missing "
                   "and images_gone",
    "properties": {name: {"type": "integer", "minimum": 0} for name in ALL_PROGRESS_FIELDS},
}
SCHEMAS.update({
    "Job": {
        "type": "object",
        "required": ["job_id", "type", "status", "database", "collection", "created_at",
                     "started_at", "finished_at", "progress", "errors"],
        "properties": {
            "job_id": {"type": "string"},
            "type": {"type": "string", "enum": list(JOB_TYPES)},
            "status": {"type": "string", "enum": list(JOB_STATUSES)},
            "database": {"type": "string"},
            "collection": {"type": "string"},
            "document_id": {"type": "string"},
            "filter": {"type": "object"},
            "limit": {"type": "integer"},
            "force": {"type": "boolean"},
            "image_fields": {"type": "array", "items": {"type": "string"}},
            "created_at": {"type": "string", "format": "date-time"},
            "started_at": {"type": "string", "format": "date-time", "nullable": True},
            "finished_at": {"type": "string", "format": "date-time", "nullable": True},
            "progress": _PROGRESS,
            "errors": {"type": "array", "maxItems": 100, "items": {
                "type": "object",
                "properties": {"document_id": {"type": "string"},
                               "url": {"type": "string", "nullable": True},
                               "code": {"type": "string", "nullable": True,
                                        "description": "an image's error code (http_<status>, "
                                        "timeout, connection_error, too_large, not_an_image, "
                                        "corrupt_image, decompression_bomb, blocked_address, "
                                        "invalid_url, too_many_redirects, cancelled, "
                                        "folder_conflict, robots_disallowed, opted_out) or "
                                        "writeback_failed"},
                               "message": {"type": "string", "nullable": True}}}},
            "message": {"type": "string"},
            "retry_of": {"type": "string", "description": "the job this one retries"},
            "older_than_days": {"type": "number",
                                "description": "a refresh job: images not checked for this long"},
        },
    },
    "JobList": {
        "type": "object",
        "required": ["jobs", "total", "limit", "offset"],
        "properties": {"jobs": {"type": "array", "items": {"$ref": "#/components/schemas/Job"}},
                       "total": {"type": "integer"}, "limit": {"type": "integer"},
                       "offset": {"type": "integer"}},
    },
    "Accepted": {
        "type": "object",
        "required": ["job_id", "status", "links"],
        "properties": {"job_id": {"type": "string"}, "status": {"type": "string", "enum": ["pending"]},
                       "links": {"type": "object", "properties": {"self": {"type": "string"}}}},
    },
    "DownloadOptions": {
        "type": "object",
        "properties": {
            "filter": {"type": "object", "description": "MongoDB query (Extended JSON); "
                       "$where, $function and $accumulator are refused"},
            "limit": {"type": "integer", "minimum": 1, "maximum": 100000},
            "force": {"type": "boolean"},
            "image_fields": {"type": "array", "minItems": 1, "items": {"type": "string"}},
        },
    },
    "RefreshOptions": {
        "type": "object",
        "properties": {
            "filter": {"type": "object", "description": "MongoDB query (Extended JSON)"},
            "limit": {"type": "integer", "minimum": 1, "maximum": 100000},
            "older_than_days": {"type": "number", "minimum": 0, "maximum": 36500,
                                "description": "only images not checked for this many days"},
        },
    },
    "DocumentOptions": {
        "type": "object",
        "properties": {"force": {"type": "boolean"},
                       "image_fields": {"type": "array", "minItems": 1, "items": {"type": "string"}}},
    },
    "BatchRequest": {
        "allOf": [{"$ref": "#/components/schemas/DownloadOptions"},
                  {"type": "object", "required": ["database", "collection"],
                   "properties": {"database": {"type": "string"}, "collection": {"type": "string"}}}],
    },
})


def _path_param(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


def _query_param(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema}


def _body(ref: str, *, required: bool = False) -> dict[str, Any]:
    return {"required": required,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}}


ACCEPTED = {
    "description": "Job created; see Location",
    "headers": {"Location": {"schema": {"type": "string"}}},
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Accepted"}}},
}
COMMON_ERRORS = {
    "400": _error("invalid_request or invalid_filter"),
    "401": UNAUTHORIZED,
    "415": _error("Body is not JSON"),
    "429": RATE_LIMITED,
    "503": _error("MongoDB or Redis unavailable"),
}

PATHS: dict[str, Any] = {
    "/api/v1/health": {
        "get": {
            "summary": "Health of the api and its backing services (checks at most 5 s old)",
            "security": [],
            "responses": {
                "200": _json("MongoDB and Redis answer", "Health"),
                "503": _json("A backing service is down", "Health"),
            },
        }
    },
    "/api/v1/metrics": {
        "get": {
            "summary": "Prometheus metrics",
            "security": [],
            "responses": {"200": {"description": "Prometheus text format",
                                  "content": {"text/plain": {"schema": {"type": "string"}}}}},
        }
    },
    "/api/v1/openapi.json": {
        "get": {
            "summary": "This document",
            "responses": {"200": {"description": "OpenAPI 3 document",
                                  "content": {"application/json": {"schema": {"type": "object"}}}},
                          # 429: failed authentication attempts are limited per address.
                          "401": UNAUTHORIZED, "429": RATE_LIMITED},
        }
    },
    "/api/v1/docs": {
        "get": {
            "summary": "Swagger UI (development only)",
            "security": [],
            "responses": {"200": {"description": "HTML page",
                                  "content": {"text/html": {"schema": {"type": "string"}}}},
                          "404": _error("Not served in production, nor without the [dev] "
                                        "extra")},
        }
    },
}



PATHS.update({
    "/api/v1/download/collection/{database}/{collection}": {
        "post": {
            "summary": "Download the images of a collection (optionally filtered, limited)",
            "parameters": [_path_param("database"), _path_param("collection")],
            "requestBody": _body("DownloadOptions"),
            "responses": {"202": ACCEPTED, **COMMON_ERRORS,
                          "404": _error("collection_not_found")},
        }
    },
    "/api/v1/download/document/{database}/{collection}/{document_id}": {
        "post": {
            "summary": "Download the images of one document",
            "parameters": [_path_param("database"), _path_param("collection"),
                           _path_param("document_id")],
            "requestBody": _body("DocumentOptions"),
            "responses": {"202": ACCEPTED, **COMMON_ERRORS,
                          "404": _error("document_not_found or collection_not_found")},
        }
    },
    "/api/v1/refresh/{database}/{collection}": {
        "post": {
            "summary": "Re-check the stored images of a collection at their source "
                       "(conditional requests; a job of type refresh)",
            "parameters": [_path_param("database"), _path_param("collection")],
            "requestBody": _body("RefreshOptions"),
            "responses": {"202": ACCEPTED, **COMMON_ERRORS,
                          "404": _error("collection_not_found")},
        }
    },
    "/api/v1/download/batch": {
        "post": {
            "summary": "Download the images of the documents matching a filter",
            "requestBody": _body("BatchRequest", required=True),
            "responses": {"202": ACCEPTED, **COMMON_ERRORS,
                          "404": _error("collection_not_found")},
        }
    },
    "/api/v1/jobs": {
        "get": {
            "summary": "List jobs, newest first",
            "parameters": [
                _query_param("status", {"type": "string", "enum": ["pending", "running", "completed", "failed", "cancelled"]}),
                _query_param("type", {"type": "string", "enum": ["collection", "document", "batch", "change_stream"]}),
                _query_param("limit", {"type": "integer", "minimum": 1, "default": 50,
                                      "description": "page size; values above 500 are served as 500"}),
                _query_param("offset", {"type": "integer", "minimum": 0, "default": 0}),
            ],
            "responses": {"200": _json("A page of jobs", "JobList"), "400": _error("invalid_request"),
                          "401": UNAUTHORIZED, "429": RATE_LIMITED, "503": _error("unavailable")},
        }
    },
    "/api/v1/jobs/{job_id}": {
        "get": {
            "summary": "One job",
            "parameters": [_path_param("job_id")],
            "responses": {"200": _json("The job", "Job"), "404": _error("job_not_found"),
                          "401": UNAUTHORIZED, "429": RATE_LIMITED, "503": _error("unavailable")},
        }
    },
    "/api/v1/jobs/{job_id}/cancel": {
        "post": {
            "summary": "Cancel a pending or running job",
            "parameters": [_path_param("job_id")],
            "responses": {"200": _json("The cancelled job", "Job"), "404": _error("job_not_found"),
                          "409": _error("job_finished"), "401": UNAUTHORIZED,
                          "429": RATE_LIMITED, "503": _error("unavailable")},
        }
    },
})

_COUNT = {"type": "integer", "minimum": 0}
SCHEMAS.update({
    "QueueList": {
        "type": "object",
        "required": ["queues", "workers"],
        "properties": {
            "queues": {"type": "array", "items": {
                "type": "object", "required": ["name", "ready", "delayed", "dead"],
                "properties": {"name": {"type": "string"}, "ready": _COUNT, "delayed": _COUNT,
                               "dead": _COUNT}}},
            "workers": {**_COUNT, "description": "worker processes seen in the last minute"},
        },
    },
    "Redriven": {"type": "object", "required": ["redriven"], "properties": {"redriven": _COUNT}},
})
AUTH_ERRORS = {"401": UNAUTHORIZED, "429": RATE_LIMITED, "503": _error("unavailable")}

PATHS.update({
    "/api/v1/jobs/{job_id}/retry": {
        "post": {
            "summary": "Start a new job of the same type and scope as a finished job",
            "parameters": [_path_param("job_id")],
            "responses": {"202": ACCEPTED,
                          "404": _error("job_not_found, or collection_not_found / "
                                        "document_not_found when the job's source is gone"),
                          "409": _error("job_active: the job is pending or running; "
                                        "retry_active: a retry of it is pending or running "
                                        "(the error's `job_id` names it)"),
                          **AUTH_ERRORS},
        }
    },
    "/api/v1/queues": {
        "get": {
            "summary": "Ready, delayed and dead messages per queue, and live workers",
            "responses": {"200": _json("The queues", "QueueList"), **AUTH_ERRORS},
        }
    },
    "/api/v1/queues/{name}/redrive": {
        "post": {
            "summary": "Enqueue the queue's dead-lettered messages again",
            "parameters": [_path_param("name")],
            "responses": {"200": _json("How many were enqueued again", "Redriven"),
                          "404": _error("queue_not_found"), **AUTH_ERRORS},
        }
    },
})


SCHEMAS["Metadata"] = {
    "type": "object",
    "description": "The document's metadata.json as stored (contract §6)",
    "required": ["schema_version", "database", "collection", "document_id", "images"],
    "properties": {"schema_version": {"type": "integer"}, "database": {"type": "string"},
                   "collection": {"type": "string"}, "document_id": {"type": "string"},
                   "images": {"type": "array", "items": {"type": "object"}},
                   "summary": {"type": "object"}},
}
_DOCUMENT_PARAMS = [_path_param("database"), _path_param("collection"), _path_param("document_id")]
_CACHE_HEADERS = {"ETag": {"description": "the file's sha256, quoted", "schema": {"type": "string"}},
                  "Cache-Control": {"schema": {"type": "string", "example": "private, max-age=3600"}}}
PATHS.update({
    "/api/v1/documents/{database}/{collection}/{document_id}": {
        "get": {
            "summary": "The document's metadata.json as stored",
            "parameters": _DOCUMENT_PARAMS,
            "responses": {"200": _json("metadata.json", "Metadata"),
                          "400": _error("invalid_request: a bad name or id"),
                          "404": _error("document_not_found: unknown, or never downloaded"),
                          **AUTH_ERRORS},
        }
    },
    "/api/v1/documents/{database}/{collection}/{document_id}/files/{file}": {
        "get": {
            "summary": "A file listed in the document's metadata.json "
                       "(original/img_001.jpg, processed/thumb/img_001.webp)",
            "parameters": [*_DOCUMENT_PARAMS,
                           {**_path_param("file"), "description": "may contain /"},
                           {"name": "If-None-Match", "in": "header", "required": False,
                            "schema": {"type": "string"}}],
            "responses": {
                "200": {"description": "The file's bytes, with the Content-Type of its format",
                        "headers": _CACHE_HEADERS,
                        "content": {"image/*": {"schema": {"type": "string", "format": "binary"}},
                                    "application/octet-stream": {
                                        "schema": {"type": "string", "format": "binary"}}}},
                "304": {"description": "Not modified (If-None-Match matched the ETag)",
                        "headers": _CACHE_HEADERS},
                "400": _error("invalid_request: a bad name or id"),
                "404": _error("file_not_found (anything metadata.json does not list) or "
                              "document_not_found"),
                **AUTH_ERRORS,
            },
        }
    },
})


SCHEMAS["PlaceholderCandidates"] = {
    "type": "object",
    "description": "The perceptual hashes met in the most documents of a collection "
                   "(contract §18), most first; only hashes met in 2 documents or more",
    "required": ["database", "collection", "scan", "scanned", "hashes"],
    "properties": {
        "database": {"type": "string"}, "collection": {"type": "string"},
        "scan": {"type": "integer", "description": "the newest documents asked for"},
        "scanned": {"type": "integer", "description": "documents looked at"},
        "hashes": {"type": "array", "items": {
            "type": "object", "required": ["phash", "documents", "known", "examples"],
            "properties": {
                "phash": {"type": "string", "pattern": "^[0-9a-f]{16}$"},
                "documents": {"type": "integer", "minimum": 2},
                "known": {"type": "boolean",
                          "description": "within 4 bits of a hash of PLACEHOLDER_HASHES"},
                "examples": {"type": "array", "maxItems": 5, "items": {
                    "type": "object", "properties": {"document_id": {"type": "string"},
                                                     "file": {"type": "string"}}}}}}},
    },
}
PATHS["/api/v1/placeholders/{database}/{collection}"] = {
    "get": {
        "summary": "Placeholder candidates: the perceptual hashes shared by the most documents "
                   "of a collection, from the newest documents finished by jobs",
        "parameters": [
            _path_param("database"), _path_param("collection"),
            _query_param("top", {"type": "integer", "minimum": 1, "default": 20,
                                 "description": "how many hashes; above 200 served as 200"}),
            _query_param("scan", {"type": "integer", "minimum": 1, "default": 10000,
                                  "description": "how many of the newest documents to count "
                                                 "over; above 100000 served as 100000"}),
        ],
        "responses": {"200": _json("The candidates", "PlaceholderCandidates"),
                      "400": _error("invalid_request: a bad name, top or scan"),
                      **AUTH_ERRORS},
    }
}


SCHEMAS.update({
    "TrashList": {
        "type": "object",
        "required": ["items"],
        "properties": {"items": {"type": "array", "items": {
            "type": "object", "required": ["folder", "document_id", "deleted_at", "images"],
            "properties": {
                "folder": {"type": "string", "description": "the folder's name in the tree"},
                "document_id": {"type": "string", "nullable": True},
                "deleted_at": {"type": "string", "format": "date-time", "nullable": True},
                "images": {**_COUNT, "description": "image records in its metadata.json"}}}}},
    },
    "Restored": {"type": "object", "required": ["restored"],
                 "properties": {"restored": {"type": "string"}}},
    "Purged": {"type": "object", "required": ["removed"],
               "properties": {"removed": {**_COUNT, "description": "files removed"}}},
})
PATHS.update({
    "/api/v1/trash/{database}/{collection}": {
        "get": {
            "summary": "The trashed folders of a collection (deleted documents), newest first",
            "parameters": [_path_param("database"), _path_param("collection")],
            "responses": {"200": _json("The trash", "TrashList"),
                          "400": _error("invalid_request: a bad name"), **AUTH_ERRORS},
        }
    },
    "/api/v1/trash/{database}/{collection}/{folder}/restore": {
        "post": {
            "summary": "Move a trashed folder back into the tree (its deleted_at removed)",
            "parameters": [_path_param("database"), _path_param("collection"),
                           _path_param("folder")],
            "responses": {"200": _json("The folder restored", "Restored"),
                          "400": _error("invalid_request: a bad name"),
                          "404": _error("not_in_trash"),
                          "409": _error("folder_conflict: the folder exists in the tree again"),
                          **AUTH_ERRORS},
        }
    },
    "/api/v1/documents/{database}/{collection}/{document_id}/images": {
        "delete": {
            "summary": "Purge (takedown): remove the document's folder, every variant and any "
                       "trashed copy, also for a document already deleted from MongoDB",
            "parameters": _DOCUMENT_PARAMS,
            "responses": {"200": _json("How many files were removed", "Purged"),
                          "400": _error("invalid_request: a bad name or id"),
                          "404": _error("document_not_found: neither a folder nor a trashed "
                                        "copy"),
                          **AUTH_ERRORS},
        }
    },
})


def build_document() -> dict[str, Any]:
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "images-service",
            "version": __version__,
            "description": "Downloads and manages the images referenced by MongoDB documents.",
        },
        "servers": [{"url": "/"}],
        "security": [{"ApiKey": []}],
        "paths": PATHS,
        "components": {
            "securitySchemes": {"ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}},
            "schemas": SCHEMAS,
        },
    }


@bp.get("/api/v1/openapi.json")
@bp.get("/openapi.json")
def openapi_json():
    return jsonify(build_document())


_DOCS_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>images-service API</title>
<link rel="stylesheet" href="/docs/static/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="/docs/static/swagger-ui-bundle.js"></script>
<script>
window.ui = SwaggerUIBundle({spec: %s, dom_id: "#swagger-ui", deepLinking: true});
</script></body></html>
"""


def _docs_enabled() -> str:
    """The directory of Swagger UI's assets; 404 outside development or without them."""
    if not services().settings.is_development:
        abort(404, description="/docs is served only when ENVIRONMENT=development")
    try:
        from swagger_ui_bundle import swagger_ui_path
    except ImportError:
        abort(404, description="/docs needs Swagger UI's assets: "
                               "pip install 'images-service[dev]'")
    return swagger_ui_path


@bp.get("/api/v1/docs")
@bp.get("/docs")
def docs():
    _docs_enabled()
    # `</` inside the embedded JSON would end the script element early.
    spec = json.dumps(build_document()).replace("</", "<\\/")
    return Response(_DOCS_PAGE % spec, mimetype="text/html")


@bp.get("/docs/static/<path:filename>")
def docs_static(filename: str):
    return send_from_directory(_docs_enabled(), filename)
