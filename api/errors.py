"""JSON error bodies for every error the api answers: ``{"error": {"code", "message"}}``.

Service errors carry their own code and status (images_service.errors); Werkzeug's HTTP
errors (404, 405, 415, 429, ...) are mapped to stable codes here, once.
"""

from __future__ import annotations

import logging

from flask import Flask, Response, jsonify
from pymongo.errors import PyMongoError
from redis.exceptions import RedisError
from werkzeug.exceptions import HTTPException

from images_service.errors import ApiError
from images_service.redaction import redact

log = logging.getLogger(__name__)

#: Stable codes for the HTTP errors Werkzeug raises.
HTTP_CODES = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    408: "timeout",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
    500: "internal_error",
    503: "unavailable",
}


def error_response(status: int, code: str, message: str,
                   details: dict | None = None) -> Response:
    response = jsonify({"error": {"code": code, "message": message, **(details or {})}})
    response.status_code = status
    return response


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError) -> Response:
        return error_response(exc.status, exc.code, exc.message, exc.details)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        response = error_response(status, HTTP_CODES.get(status, "http_error"), exc.description or "")
        for name, value in exc.get_headers():
            if name.lower() not in ("content-type", "content-length"):
                response.headers[name] = value
        return response

    @app.errorhandler(PyMongoError)
    @app.errorhandler(RedisError)
    def _backend_down(exc: Exception) -> Response:
        log.warning("backing service error: %s: %s", type(exc).__name__, redact(str(exc)))
        return error_response(503, "unavailable", f"a backing service is unavailable: {type(exc).__name__}")

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        log.exception("unhandled error")
        return error_response(500, "internal_error", "internal server error")
