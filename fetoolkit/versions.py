"""Versions of the libraries that shape a result, for reports."""

from __future__ import annotations

import platform
from importlib import metadata


def library_versions() -> dict[str, str]:
    """``{package: version}`` for the packages that determine the numbers."""
    out = {"python": platform.python_version()}
    for pkg in (
        "fetoolkit",
        "torch",
        "numpy",
        "onnxruntime",
        "onnx",
        "facenet-pytorch",
        "opencv-python-headless",
        "pillow",
    ):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out
