"""Reading a request's JSON body: empty means ``{}``, anything else must be a JSON object."""

from __future__ import annotations

import json
from typing import Any

from flask import request
from werkzeug.exceptions import UnsupportedMediaType

from images_service.errors import InvalidRequest


def json_object(*, required: bool = False) -> dict[str, Any]:
    raw = request.get_data(cache=True)
    if not raw.strip():
        if required:
            raise InvalidRequest("a JSON object body is required")
        return {}
    mimetype = request.mimetype or ""
    if mimetype and mimetype != "application/json" and not mimetype.endswith("+json"):
        raise UnsupportedMediaType("send the body as application/json")
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise InvalidRequest("the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise InvalidRequest("the body must be a JSON object")
    return body


def string_field(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value:
        raise InvalidRequest(f"{name} must be a non-empty string")
    return value
