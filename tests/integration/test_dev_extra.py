"""`images-service dev` without the [dev] extra fails with what to install, not a traceback."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from images_service.dev.embedded import free_port
from tests.support.processes import REPO, service_command


def test_dev_without_the_extra_says_what_to_install(tmp_path: Path, redis_url: str) -> None:
    # Given an environment where the embedded server's packages cannot be imported (as after
    # `pip install images-service` without [dev]); shadows on PYTHONPATH reach child processes
    absent = tmp_path / "absent"
    for name in ("nx_27017", "neosqlite"):
        (absent / name).mkdir(parents=True)
        (absent / name / "__init__.py").write_text(
            f'raise ModuleNotFoundError("No module named {name!r}", name={name!r})\n')
    env = {**os.environ, "PYTHONPATH": f"{absent}{os.pathsep}{REPO}",
           "MONGODB_URI": f"mongodb://127.0.0.1:{free_port()}", "REDIS_URL": redis_url}
    # When the dev stack is started
    result = subprocess.run(service_command("dev", "--data-dir", str(tmp_path / "data")),
                            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    # Then it stops at once with the install command
    assert result.returncode == 2
    assert "pip install 'images-service[dev]'" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
