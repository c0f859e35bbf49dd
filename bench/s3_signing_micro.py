"""CPU of one S3 PUT with the body hashed into the SigV4 signature (botocore's default over
plain HTTP) and with ``UNSIGNED-PAYLOAD`` (``payload_signing_enabled=False``), against a
local SeaweedFS (``images_service/dev/embedded_s3.py``). Issue 24 asked whether the payload
hash is what makes the S3 backend slow; see docs/throughput.md for the answer.

    .venv/bin/python bench/s3_signing_micro.py [--puts 300] [--bytes 90000]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import boto3
from botocore.config import Config

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from images_service.dev.embedded_s3 import EmbeddedS3  # noqa: E402

KEYS = ("bench-access-key", "bench-secret-key")  # dummy: weed runs without identities
BUCKET = "bench-signing"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--puts", type=int, default=300)
    parser.add_argument("--bytes", type=int, default=90_000, help="body size (corpus median)")
    args = parser.parse_args()
    s3 = EmbeddedS3(Path(tempfile.mkdtemp(prefix="s3-signing-")) / "s3", keys=KEYS).start(
        probe_bucket=BUCKET)
    os.environ.update(AWS_ACCESS_KEY_ID=KEYS[0], AWS_SECRET_ACCESS_KEY=KEYS[1])
    body = os.urandom(args.bytes)
    try:
        for round_ in (1, 2):
            for signed in (True, False):
                s3_options = {"addressing_style": "path"}
                if not signed:
                    s3_options["payload_signing_enabled"] = False
                config = Config(region_name="us-east-1", signature_version="s3v4", s3=s3_options,
                                request_checksum_calculation="when_required",
                                response_checksum_validation="when_required")
                client = boto3.session.Session().client("s3", endpoint_url=s3.endpoint_url,
                                                        config=config)
                client.put_object(Bucket=BUCKET, Key="warm-up", Body=body)
                cpu, wall = time.process_time(), time.perf_counter()
                for i in range(args.puts):
                    client.put_object(Bucket=BUCKET, Key=f"{signed}-{round_}-{i}", Body=body)
                print(f"round {round_} {'signed payload' if signed else 'UNSIGNED-PAYLOAD'}: "
                      f"CPU {1000 * (time.process_time() - cpu) / args.puts:.3f} ms/put, "
                      f"wall {1000 * (time.perf_counter() - wall) / args.puts:.3f} ms/put")
    finally:
        s3.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
