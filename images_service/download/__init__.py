"""Downloading one document: planning (folder key, numbered URLs), the document folder (folder),
the engine (one image), fleet caps, URL extraction and derived images in the download path."""
