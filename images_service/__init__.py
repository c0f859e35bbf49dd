"""images-service: downloads and manages the images referenced by MongoDB documents."""

__version__ = "0.1.0"
