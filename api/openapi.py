"""The OpenAPI 3 document of the api, and Swagger UI served from the swagger-ui-bundle package.

The document is written out by hand next to the views (``PATHS``) and kept honest by a test
that compares it with the app's URL map. ``/docs`` is served only in development; the page
embeds the document, so it needs no second, authenticated fetch.
"""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, Response, abort, jsonify, send_from_directory
from swagger_ui_bundle import swagger_ui_path

from api.context import services
from images_service import __version__

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
RATE_LIMITED = _error("Over the per-key rate limit; see Retry-After")

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
                "properties": {"mongodb": {"type": "string"}, "redis": {"type": "string"}},
            },
        },
    },
}

PATHS: dict[str, Any] = {
    "/api/v1/health": {
        "get": {
            "summary": "Health of the api and its backing services",
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
                          "401": UNAUTHORIZED},
        }
    },
    "/api/v1/docs": {
        "get": {
            "summary": "Swagger UI (development only)",
            "security": [],
            "responses": {"200": {"description": "HTML page",
                                  "content": {"text/html": {"schema": {"type": "string"}}}},
                          "404": _error("Not served in production")},
        }
    },
}


def register_paths(paths: dict[str, Any], schemas: dict[str, Any] | None = None) -> None:
    """Views of other modules add their operations here at import time."""
    PATHS.update(paths)
    SCHEMAS.update(schemas or {})


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


def _docs_enabled() -> None:
    if not services().settings.is_development:
        abort(404, description="/docs is served only when ENVIRONMENT=development")


@bp.get("/api/v1/docs")
@bp.get("/docs")
def docs():
    _docs_enabled()
    # `</` inside the embedded JSON would end the script element early.
    spec = json.dumps(build_document()).replace("</", "<\\/")
    return Response(_DOCS_PAGE % spec, mimetype="text/html")


@bp.get("/docs/static/<path:filename>")
def docs_static(filename: str):
    _docs_enabled()
    return send_from_directory(swagger_ui_path, filename)
