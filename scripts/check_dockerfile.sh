#!/usr/bin/env bash
# Stand-in for `docker build` where no Docker engine runs: replay the `build` stage of
# deploy/Dockerfile (its WORKDIR, ENV, COPY and RUN steps) in a fresh virtualenv, with
# /opt/venv mapped to $CHECK_VENV and the build context staged from the repository the way
# COPY would. Then check what the runtime stage relies on:
#   - `images-service --help` and each process's --help work from outside the repository;
#   - api/gunicorn_conf.py is installed where `images-service api` looks for it;
#   - only the runtime is installed (no [dev]/[test] packages, Swagger UI's assets included),
#     and `images-service dev` exits 2 naming the [dev] extra;
#   - every installed distribution is pinned, at that version, by constraints.txt.
# Needs python3 (3.11, like the image) and access to PyPI. Exits non-zero on any failure.
# Usage: bash scripts/check_dockerfile.sh   (about a minute; RUN_DOCKERFILE_CHECK=1 makes
# tests/integration/test_deploy.py run it).
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
DOCKERFILE="${DOCKERFILE:-$REPO/deploy/Dockerfile}"
CHECK_VENV="${CHECK_VENV:-/tmp/dockerfile-check-venv}"
CHECK_CTX="${CHECK_CTX:-/tmp/dockerfile-check-context}"
PYTHON="${PYTHON:-python3}"
IMAGE_VENV=/opt/venv

say() { printf '\n[check_dockerfile] %s\n' "$*"; }
fail() { printf '\n[check_dockerfile] FAILED: %s\n' "$*" >&2; exit 1; }

"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)' \
  || say "warning: $("$PYTHON" -V) is not the image's Python 3.11; results may differ"

rm -rf "$CHECK_VENV" "$CHECK_CTX"
mkdir -p "$CHECK_CTX"
steps="$(mktemp /tmp/dockerfile-check-steps.XXXXXX.sh)"
trap 'rm -f "$steps"' EXIT

# Translate the `build` stage into a shell script. A deliberately small Dockerfile subset:
# anything else in that stage is an error, so the check can never silently skip a step.
"$PYTHON" - "$DOCKERFILE" "$REPO" "$CHECK_CTX" "$IMAGE_VENV" "$CHECK_VENV" > "$steps" <<'PY'
import re, shlex, sys
dockerfile, repo, ctx, image_venv, venv = sys.argv[1:]

def instructions(text):
    logical = ""
    for line in text.splitlines():
        if not logical and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            logical += line.rstrip()[:-1] + " "
            continue
        logical += line
        keyword, _, rest = logical.strip().partition(" ")
        yield keyword.upper(), rest.strip()
        logical = ""

def out(line):
    print(line)

stage = None
seen_build = False
workdir = ctx
out("set -euo pipefail")
for keyword, rest in instructions(open(dockerfile).read()):
    if keyword == "FROM":
        m = re.search(r"\bAS\s+(\S+)\s*$", rest, re.I)
        stage = m.group(1) if m else None
        seen_build = seen_build or stage == "build"
        continue
    if keyword == "ARG" or stage != "build":
        continue
    out(f"echo {shlex.quote('+ ' + keyword + ' ' + rest)}")
    if keyword == "WORKDIR":
        workdir = ctx + "/" + rest.lstrip("/")
        out(f"mkdir -p {shlex.quote(workdir)} && cd {shlex.quote(workdir)}")
    elif keyword == "ENV":
        for pair in shlex.split(rest):
            name, sep, value = pair.partition("=")
            if not sep:
                sys.exit(f"ENV {rest!r}: only the NAME=value form is supported")
            out(f"export {name}={value.replace(image_venv, venv)}")
    elif keyword == "COPY":
        args = shlex.split(rest)
        if any(a.startswith("--") for a in args):
            sys.exit(f"COPY {rest!r}: flags are not supported in the build stage")
        *sources, dest = args
        target = ctx + dest if dest.startswith("/") else workdir + "/" + dest
        for src in sources:
            s = shlex.quote(repo + "/" + src)
            if len(sources) > 1 or dest.endswith("/"):
                out(f"mkdir -p {shlex.quote(target)}")
                out(f"if [ -d {s} ]; then cp -a {s}/. {shlex.quote(target)}/; "
                    f"else cp -a {s} {shlex.quote(target)}/; fi")
            else:
                out(f"mkdir -p \"$(dirname {shlex.quote(target)})\"")
                out(f"if [ -d {s} ]; then mkdir -p {shlex.quote(target)} && "
                    f"cp -a {s}/. {shlex.quote(target)}/; else cp -a {s} {shlex.quote(target)}; fi")
    elif keyword == "RUN":
        if rest.startswith("["):
            sys.exit("RUN in exec form is not supported in the build stage")
        out(f"( cd {shlex.quote(workdir)} && {rest.replace(image_venv, venv)} )")
    else:
        sys.exit(f"{keyword} is not supported in the build stage")
if not seen_build:
    sys.exit("no `FROM ... AS build` stage in the Dockerfile")
PY

say "replaying the build stage of $DOCKERFILE (venv $CHECK_VENV, context $CHECK_CTX)"
bash "$steps" || fail "a build step failed"

[ -x "$CHECK_VENV/bin/images-service" ] || fail "no images-service console script in the venv"

# From a neutral directory, without the repository on sys.path: only the installed package.
cd /tmp
unset PYTHONPATH
say "images-service --help (and each process's --help)"
"$CHECK_VENV/bin/images-service" --help || fail "images-service --help"
for command in api worker listener dev; do
  "$CHECK_VENV/bin/images-service" "$command" --help > /dev/null \
    || fail "images-service $command --help"
done

say "installed modules and files the processes need"
"$CHECK_VENV/bin/python" - <<'PY' || fail "installed package is incomplete"
import importlib, pathlib, sys
import images_service.cli as cli
for module in ("api", "api.health", "api.metrics", "api.openapi", "workers.app",
               "images_service.queueing.broker",
               "workers.listener.process", "images_service.config.settings"):
    importlib.import_module(module)
conf = pathlib.Path(cli.__file__).resolve().parent.parent / "api" / "gunicorn_conf.py"
if not conf.is_file():
    sys.exit(f"{conf} is missing: `images-service api` could not start gunicorn")
if "site-packages" not in cli.__file__:
    sys.exit(f"images_service imported from {cli.__file__}, not from the venv")
print("ok:", conf)
PY

say "the runtime only: no [dev]/[test] packages, and \`images-service dev\` says what to install"
"$CHECK_VENV/bin/python" - <<'PY' || fail "development packages installed in the image"
import sys
from importlib.metadata import PackageNotFoundError, version
present = []
for name in ("nx-27017", "neosqlite", "psutil", "pytest", "swagger-ui-bundle"):
    try:
        present.append(f"{name}=={version(name)}")
    except PackageNotFoundError:
        pass
print("\n".join(present) or "ok: none of nx-27017, neosqlite, psutil, pytest, swagger-ui-bundle")
sys.exit(1 if present else 0)
PY
set +e
dev_out="$("$CHECK_VENV/bin/images-service" dev 2>&1)"; dev_code=$?
set -e
[ "$dev_code" -eq 2 ] && grep -q "pip install 'images-service\[dev\]'" <<<"$dev_out" \
  || fail "images-service dev without the extra exited $dev_code: $dev_out"

say "every installed distribution is pinned by constraints.txt"
"$CHECK_VENV/bin/python" - "$REPO/constraints.txt" <<'PY' || fail "unpinned dependencies"
import re, sys
from importlib.metadata import distributions
norm = lambda name: re.sub(r"[-_.]+", "-", name).lower()
pins = {}
for line in open(sys.argv[1]):
    line = line.split("#")[0].strip()
    if "==" in line:
        name, version = line.split("==", 1)
        pins[norm(name)] = version.strip()
tooling = {"pip", "setuptools", "wheel", "images-service"}
problems = []
for dist in distributions():
    name = norm(dist.metadata["Name"])
    if name in tooling:
        continue
    if name not in pins:
        problems.append(f"{name}=={dist.version} is installed but not in constraints.txt")
    elif pins[name] != dist.version:
        problems.append(f"{name}=={dist.version} differs from constraints.txt ({pins[name]})")
print("\n".join(problems) or "ok: all installed distributions are pinned")
sys.exit(1 if problems else 0)
PY

say "OK: the Dockerfile's build steps work in a fresh venv"
