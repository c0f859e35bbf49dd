"""The image tree on disk (CONTRACT.md §5, §6): names and paths, atomic files, metadata.json.

``layout`` computes names only, ``files`` writes atomically, ``metadata`` owns metadata.json.
"""
