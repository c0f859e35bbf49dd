"""Dependency floors that exist for security fixes, and Swagger UI as a development extra
(contract §14 "Surface"): setup.cfg, constraints.txt and the README agree."""

from __future__ import annotations

import configparser
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

REPO = Path(__file__).resolve().parents[2]
#: package -> (first fixed version, a vulnerable version just below, CVEs fixed)
FLOORS = {
    "requests": ("2.32.4", "2.32.3", ["CVE-2024-47081"]),
    "certifi": ("2024.7.4", "2024.6.2", ["CVE-2024-39689"]),
    "flask-cors": ("6.0.0", "5.0.1", ["CVE-2024-6839", "CVE-2024-6844", "CVE-2024-6866"]),
    "urllib3": ("2.6.3", "2.6.2", ["CVE-2025-66418", "CVE-2025-66471", "CVE-2026-21441"]),
}


def _setup_cfg() -> configparser.ConfigParser:
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    return config


def _requirements(text: str) -> dict[str, Requirement]:
    lines = [line.split("#")[0].strip() for line in text.splitlines()]
    return {Requirement(line).name.lower(): Requirement(line) for line in lines if line}


def _pins() -> dict[str, str]:
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        name, _, version = line.split("#")[0].strip().partition("==")
        if version:
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    return pins


@pytest.mark.parametrize("name", FLOORS)
def test_security_floors_admit_no_vulnerable_version(name: str) -> None:
    fixed, vulnerable, _cves = FLOORS[name]
    required = _requirements(_setup_cfg()["options"]["install_requires"])[name]
    assert not required.specifier.contains(vulnerable), f"{required} admits {vulnerable}"
    assert required.specifier.contains(fixed), f"{required} refuses the fixed {fixed}"
    pinned = _pins()[name]
    assert Version(pinned) >= Version(fixed) and required.specifier.contains(pinned)


def test_the_readme_lists_every_security_floor_with_its_cves() -> None:
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## Security"):]
    section = section[:section.index("\n## ", 1)]
    setup_cfg = (REPO / "setup.cfg").read_text()
    for name, (fixed, _vulnerable, cves) in FLOORS.items():
        row = next((line for line in section.splitlines()
                    if line.startswith(f"| `{name}` ")), None)
        assert row, f"the README's Security section has no row for {name}"
        assert f">={fixed}" in row, row
        for cve in cves:
            assert cve in row, f"{cve} missing from {row}"
            assert cve in setup_cfg, f"{cve}: setup.cfg should say why its floor is there"
    # and no CVE is named in setup.cfg without its README row
    assert set(re.findall(r"CVE-\d{4}-\d+", setup_cfg)) <= set(re.findall(r"CVE-\d{4}-\d+",
                                                                          section))


def test_swagger_ui_is_installed_only_for_development() -> None:
    config = _setup_cfg()
    assert "swagger-ui-bundle" not in _requirements(config["options"]["install_requires"])
    extras = config["options.extras_require"]
    assert "swagger-ui-bundle" in _requirements(extras["dev"])
    assert "swagger-ui-bundle" in _requirements(extras["test"])
    assert "swagger-ui-bundle" in _pins()
    assert "'.[dev,test]'" in (REPO / "scripts" / "bootstrap.sh").read_text()


WITHOUT_SWAGGER = """
import json, sys
sys.modules["swagger_ui_bundle"] = None  # as in the production image: not installed
from api import create_app
from images_service.config.settings import load_settings
base = json.loads(sys.argv[1])
out = {}
for environment in ("production", "development"):
    app = create_app(load_settings({**base, "ENVIRONMENT": environment}))
    client = app.test_client()
    spec = client.get("/api/v1/openapi.json", headers={"X-API-Key": base["API_KEY"]})
    docs = client.get("/docs", headers={"X-API-Key": base["API_KEY"]})
    out[environment] = [spec.status_code, docs.status_code, docs.get_json()]
print(json.dumps(out))
"""


def test_the_api_runs_without_swagger_ui(mongo_uri, redis_url, tmp_path) -> None:
    settings = {"MONGODB_URI": mongo_uri, "REDIS_URL": redis_url, "API_KEY": "test-key-0123456789",
                "STORAGE_PATH": str(tmp_path / "images")}
    done = subprocess.run([sys.executable, "-c", WITHOUT_SWAGGER, json.dumps(settings)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    # production: the API and its document are served, /docs is not (as before)
    assert result["production"][:2] == [200, 404]
    # development without the extra: /docs says what to install
    status, docs_status, body = result["development"]
    assert (status, docs_status) == (200, 404)
    assert "pip install 'images-service[dev]'" in body["error"]["message"]
