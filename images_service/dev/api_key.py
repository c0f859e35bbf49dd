"""The dev stack's own API key, kept under its data directory (issue 23).

When neither ``API_KEY`` nor ``API_KEYS`` is set, the dev stack generates a key and stores it
in ``{data_dir}/dev-api-key`` (mode 0600, created that way, never wider for a moment), and
every later start on that data directory reuses it: saved curl commands and signed-in
browser sessions (the console's cookies are signed with a secret derived from the keys) keep
working across restarts. Delete the file for a new key. A key from the environment is the
operator's and is never written anywhere.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

KEY_FILE_NAME = "dev-api-key"
#: The settings' own rule for a key (config/settings.py): 8+ characters, no whitespace.
MIN_LENGTH = 8


def _usable(key: str) -> bool:
    return len(key) >= MIN_LENGTH and not any(c.isspace() for c in key)


def _write_private(path: Path, key: str) -> None:
    """Create ``path`` with mode 0600 (replacing what was there) holding ``key``."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as out:
            out.write(key + "\n")
        os.chmod(tmp, 0o600)  # whatever the umask did
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def dev_api_key(data_dir: Path) -> tuple[str, bool]:
    """The key kept in ``data_dir``, created when missing or unusable; (key, created now)."""
    path = Path(data_dir) / KEY_FILE_NAME
    try:
        key = path.read_text().strip()
    except FileNotFoundError:
        key = ""
    if _usable(key):
        if stat.S_IMODE(path.stat().st_mode) & 0o077:
            os.chmod(path, 0o600)  # copied or restored with wider rights: a secret stays private
        return key, False
    key = secrets.token_urlsafe(24)
    _write_private(path, key)
    return key, True
