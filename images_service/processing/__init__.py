"""Derived images: the variants of ``PROCESSED_VARIANTS`` under ``processed/`` (CONTRACT.md §12).

* :mod:`.specs` — the ``NAME:WIDTHxHEIGHT:MODE:FORMAT[:QUALITY]`` grammar, ``VariantSpec``.
* :mod:`.modes` — ``fit`` and ``cover`` geometry, registered by name.
* :mod:`.encoders` — ``jpeg``, ``webp`` and ``png`` writers, registered by name.
* :mod:`.colour` — any decoded mode to 8-bit RGB/RGBA in sRGB.
* :mod:`.render` — every variant of one image from one decode.
* :mod:`.records` — the ``processed`` entry of metadata.json and what a re-download redoes.

This package only computes bytes and records; the caller stores files through the storage
interface. Nothing is imported here: :mod:`images_service.config.settings` imports :mod:`.specs`, and
:mod:`.render` imports the settings.
"""
