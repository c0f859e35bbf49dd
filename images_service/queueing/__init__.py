"""The Dramatiq side shared by every process: the broker factory, message builders, queue depths.

The api and the listener enqueue through these without importing any worker code; the
worker (workers/) consumes what they send.
"""
