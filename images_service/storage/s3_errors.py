"""What an S3 failure means, in words an operator can act on (contract §11).

Messages name the bucket, the action and the key relative to the tree, and never carry a
credential: for a refused request only the error code and HTTP status are kept, not the body
the server sent (which may echo the access key id or the string that was signed).
"""

from __future__ import annotations

from boto3.exceptions import S3UploadFailedError
from botocore.exceptions import ClientError, NoCredentialsError, PartialCredentialsError

#: Error codes of a missing key (HEAD answers a bare 404, without a body to name it).
NOT_FOUND_CODES = frozenset({"NoSuchKey", "NotFound", "404"})
#: Error codes of refused credentials or permissions.
REFUSED_CODES = frozenset({
    "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken",
    "ExpiredToken", "AllAccessDisabled", "403",
})


def error_code(exc: ClientError) -> tuple[str, int | None]:
    """``(code, HTTP status)`` of a ClientError."""
    response = exc.response or {}
    code = str(response.get("Error", {}).get("Code", ""))
    return code, response.get("ResponseMetadata", {}).get("HTTPStatusCode")


def is_not_found(exc: BaseException | None) -> bool:
    """Whether ``exc`` says the *key* is missing (a missing bucket is not "not found")."""
    return isinstance(exc, ClientError) and error_code(exc)[0] in NOT_FOUND_CODES


def describe(
    exc: BaseException, bucket: str, endpoint_url: str | None, action: str, key: str = ""
) -> str:
    """``s3 bucket 'b': upload 'db/…/img_001.jpg': <reason>`` for a failed request."""
    if isinstance(exc, S3UploadFailedError) and isinstance(exc.__context__, ClientError):
        exc = exc.__context__  # boto3 wraps the multipart upload's ClientError
    where = f"s3 bucket {bucket!r}: {action}" + (f" {key!r}" if key else "")
    return f"{where}: {_reason(exc, action, endpoint_url)}"


def _reason(exc: BaseException, action: str, endpoint_url: str | None) -> str:
    if isinstance(exc, ClientError):
        code, status = error_code(exc)
        if code == "NoSuchBucket" or (action == "head bucket" and status == 404):
            return "the bucket does not exist"
        if code in REFUSED_CODES or status == 403:
            return (f"access refused ({code or status}): check the credentials of the AWS "
                    "chain and the bucket's policy")
        return f"{code or 'error'} (HTTP {status})"
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return "no usable credentials in the standard AWS chain"
    # Connection refused, timeouts, a stream cut mid-body: botocore's message names the
    # endpoint URL and the failure, never a credential.
    return f"{type(exc).__name__} at {endpoint_url or 'AWS S3'}: {str(exc)[:200]}"
