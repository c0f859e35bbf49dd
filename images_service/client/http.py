"""A small client of the images-service REST API on ``requests``.

Every failure becomes one :class:`ApiClientError` whose message says what went wrong in the
user's terms (connection refused, 401 unauthorized, 404 job_not_found, ...), using the
contract's error codes from the api's ``{"error": {"code", "message"}}`` bodies.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import requests

from images_service import __version__
from images_service.config.settings import read_env

DEFAULT_URL = "http://127.0.0.1:8001"
API_PREFIX = "/api/v1"
#: Statuses worth asking again about while following a job (rate limit, api restarting).
TRANSIENT_STATUSES = frozenset({429, 502, 503, 504})
#: Hints appended to the api's message, for the statuses a user can fix on their side.
HINTS = {401: "check API_KEY", 429: "over the API rate limit, try again later"}


@dataclass(frozen=True)
class ClientSettings:
    """Where the api is and the key to send: ``IMAGES_SERVICE_URL`` and ``API_KEY``."""

    url: str = DEFAULT_URL
    api_key: str | None = None
    timeout_s: float = 10.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "ClientSettings":
        """From ``env`` (default: the environment over a `.env` file, as for the server)."""
        env = read_env() if env is None else env
        return cls(url=(env.get("IMAGES_SERVICE_URL") or DEFAULT_URL).rstrip("/"),
                   api_key=env.get("API_KEY") or None)


class ApiClientError(Exception):
    """The api could not be reached or answered with an error."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None,
                 transient: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.transient = transient


class ApiClient:
    def __init__(self, settings: ClientSettings) -> None:
        self.settings = settings
        self.session = requests.Session()
        self.session.headers["User-Agent"] = f"images-service-cli/{__version__}"
        if settings.api_key:
            self.session.headers["X-API-Key"] = settings.api_key

    def get(self, path: str, **params: Any) -> Any:
        return self._request("GET", path, params={k: v for k, v in params.items() if v is not None})

    def post(self, path: str, body: Mapping[str, Any] | None = None) -> Any:
        return self._request("POST", path, json=dict(body) if body is not None else None)

    def delete(self, path: str) -> Any:
        return self._request("DELETE", path)

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        url = f"{self.settings.url}{API_PREFIX}{path}"
        try:
            response = self.session.request(method, url, timeout=self.settings.timeout_s, **kwargs)
        except requests.ConnectionError as exc:
            what = "connection refused" if "refused" in str(exc).lower() else "cannot connect"
            raise ApiClientError(f"{what}: {self.settings.url} (is the api running? set "
                                 "IMAGES_SERVICE_URL)", transient=True) from None
        except requests.Timeout:
            raise ApiClientError(f"no answer from {self.settings.url} within "
                                 f"{self.settings.timeout_s:g} s", transient=True) from None
        except requests.RequestException as exc:
            raise ApiClientError(f"request to {url} failed: {exc}") from None
        if response.status_code >= 400:
            raise _error_from(response)
        try:
            return response.json()
        except ValueError:
            raise ApiClientError(f"{url} answered {response.status_code} without JSON: "
                                 "is IMAGES_SERVICE_URL the images-service api?") from None


def _error_from(response: requests.Response) -> ApiClientError:
    status = response.status_code
    try:
        error = response.json()["error"]
        code, message = str(error["code"]), str(error["message"])
    except (ValueError, KeyError, TypeError):
        return ApiClientError(f"{status} from {response.url}: not an images-service error body",
                              status=status, transient=status in TRANSIENT_STATUSES)
    text = f"{status} {code}: {message}"
    if status in HINTS:
        text += f" ({HINTS[status]})"
    return ApiClientError(text, status=status, code=code, transient=status in TRANSIENT_STATUSES)
