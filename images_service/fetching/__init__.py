"""Fetching image bytes over HTTP safely (CONTRACT.md §8).

``address_guard`` decides which IP addresses may be contacted (SSRF), ``fetcher`` streams one
attempt with redirects, caps and deadlines, ``retry_after`` parses the Retry-After header.
"""

from images_service.fetching.fetcher import FetchedBody, Fetcher

__all__ = ["FetchedBody", "Fetcher"]
