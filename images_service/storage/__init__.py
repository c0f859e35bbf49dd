"""The image tree (CONTRACT.md §5, §6, §11): names, the storage interface, metadata.json.

``layout`` computes names only; ``backend`` is the interface every reader and writer goes
through, ``filesystem`` and ``s3`` implement it and ``factory`` picks one; ``metadata`` owns
metadata.json, ``locks`` its default lock; ``files`` and ``process_temp`` are local-disk helpers.
"""
