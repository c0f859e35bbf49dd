"""Fuzz the api from its own OpenAPI document with schemathesis: no input may cause a 5xx.

Runs in-process against the real app wired to nx-27017 and the test Redis (no worker: jobs
stay pending). A 503 would mean a backing service is down, which they are not here, so every
5xx is a failure; responses must also match the documented status codes and schemas.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance

from api import create_app
from api.openapi import build_document
from tests.support.pipeline import KEY, source_db

schema = schemathesis.openapi.from_dict(build_document())


@pytest.fixture
def fuzz_app(make_settings):
    app_settings = make_settings({"API_RATE_LIMIT": "1000000/minute", "ENVIRONMENT": "development"})
    db = source_db(app_settings)
    db.hotels.drop()
    db.hotels.insert_many([{"_id": "h1", "name": "Hotel", "images": []}, {"_id": 7, "name": "Seven"}])
    return create_app(app_settings)


@schema.parametrize()
@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.filter_too_much])
def test_no_input_causes_a_server_error(case, fuzz_app):
    response = case.call(app=fuzz_app, headers={"X-API-Key": KEY})
    case.validate_response(response, checks=[not_a_server_error, status_code_conformance,
                                             response_schema_conformance])
