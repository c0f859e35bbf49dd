"""Dramatiq actors of the service (filled in by the download pipeline)."""
