"""Command-line plumbing shared by the quick jobs (``python -m fetoolkit.verify``, ``fetoolkit.embed``).

* :func:`parse_args`: ``PATH ... key=value ...`` with the keys a job takes; an unknown key is
  refused with the nearest known one ("did you mean"), never silently added.
* :func:`run_main`: a user error (a missing file, bad weights, a photo without a face, a bad value)
  prints one line naming the fix and exits 2; the traceback only with ``--verbose`` or
  ``HYDRA_FULL_ERROR=1``.
"""

from __future__ import annotations

import difflib
import logging
import os
import sys
import types
from collections.abc import Callable, Mapping, Sequence
from typing import Any

log = logging.getLogger(__name__)


def make_callable(module_name: str, function: Callable[..., Any]) -> None:
    """Make the module ``module_name`` callable as ``function``.

    ``fetoolkit.verify`` / ``fetoolkit.embed`` are functions of the package and also modules
    (``python -m fetoolkit.verify``); importing such a module makes Python bind the module to that
    name on the package, and this keeps ``fetoolkit.verify(...)`` working either way.
    """
    callable_module = type("CallableModule", (types.ModuleType,), {"__call__": lambda self, *a, **k: function(*a, **k)})
    sys.modules[module_name].__class__ = callable_module


class UsageError(ValueError):
    """The command line is wrong; the message says how to write it."""


#: Errors that are the user's to fix: one line, exit 2 (with --verbose: the traceback too).
USER_ERRORS: tuple[type[BaseException], ...] = (UsageError, FileNotFoundError, LookupError, ValueError, PermissionError)


def _text(e: BaseException) -> str:
    """The message of ``e`` (a ``KeyError``'s without the quotes ``str`` adds)."""
    return str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)


def suggest(key: str, known: Sequence[str]) -> str:
    """`` (did you mean 'x'?)`` for the nearest known key, or ''."""
    near = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
    return f" (did you mean {near[0]!r}?)" if near else ""


def _convert(key: str, raw: str, kind: type) -> Any:
    if kind is bool:
        if raw.lower() not in ("true", "false"):
            raise UsageError(f"{key} must be true or false, got {raw!r}")
        return raw.lower() == "true"
    try:
        return kind(raw)
    except ValueError:
        raise UsageError(f"{key} must be a {kind.__name__}, got {raw!r}") from None


def parse_args(argv: Sequence[str], keys: Mapping[str, type]) -> tuple[list[str], dict[str, Any]]:
    """Split ``argv`` into positional arguments and ``key=value`` settings (converted to ``keys[key]``).

    Raises:
        UsageError: an unknown key (with the nearest known one) or a value of the wrong type.
    """
    paths: list[str] = []
    values: dict[str, Any] = {}
    for arg in argv:
        key, eq, raw = arg.partition("=")
        if not eq or os.path.exists(arg):
            paths.append(arg)
            continue
        key = key.lstrip("+")
        if key not in keys:
            raise UsageError(f"unknown setting {key!r}{suggest(key, list(keys))}; this command takes {sorted(keys)}")
        values[key] = _convert(key, raw, keys[key])
    return paths, values


def run_main(main: Callable[[list[str]], int], argv: Sequence[str] | None = None, doc: str | None = None) -> int:
    """Call ``main`` with the arguments (``--verbose`` removed); user errors -> one line on stderr,
    exit 2; ``-h``/``--help`` prints ``doc``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if doc and any(a in ("-h", "--help") for a in args):
        print(doc.strip())
        return 0
    verbose = "--verbose" in args or os.environ.get("HYDRA_FULL_ERROR") == "1"
    args = [a for a in args if a != "--verbose"]
    try:
        return main(args)
    except USER_ERRORS as e:
        if verbose:
            raise
        print(f"error: {_text(e)}", file=sys.stderr)
        print("(--verbose or HYDRA_FULL_ERROR=1 shows the traceback)", file=sys.stderr)
        return 2


# --------------------------------------------------------------------------------------------
# Hydra jobs (eval, parity, export, serve)
# --------------------------------------------------------------------------------------------


def _key_paths(node: Any, prefix: str = "") -> set[str]:
    out: set[str] = set()
    if isinstance(node, dict):
        for k, v in node.items():
            path = f"{prefix}{k}"
            out.add(path)
            out |= _key_paths(v, path + ".")
    return out


def check_overrides(config_name: str, args: Sequence[str]) -> None:
    """Refuse ``key=value`` (and ``+key=value``) overrides of keys the job's config does not have,
    naming the nearest known key, before Hydra runs (Hydra would suggest ``+key=...``, which adds
    the misspelt key and runs without the setting the user meant).

    The overrides are read by Hydra's own parser (sweeps, ``choice(...)``, quoting); config group
    choices (``model=...``, a sweep's first choice) are composed first, so the keys of the chosen
    data set, model and detector count; ``hydra.*`` overrides and deletions (``~key``) are Hydra's.
    Whatever this check cannot compose (a bad group choice, ``--config-dir``) is left to Hydra,
    which reports it itself.

    Raises:
        UsageError: an unknown key.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    from fetoolkit.config import CONFIGS

    if any(a.split("=")[0] in _OTHER_CONFIG_FLAGS for a in args):
        return  # another config than the job's: Hydra knows its keys
    try:
        overrides = OverridesParser.create().parse_overrides([a for a in args if "=" in a and not a.startswith("-")])
    except Exception:
        return  # Hydra reports the syntax error itself
    groups = {d.name for d in CONFIGS.iterdir() if d.is_dir()}
    choices, keys = [], []
    for o in overrides:
        key = o.key_or_group
        if key.startswith("hydra") or o.is_delete():
            continue
        if key in groups and not o.is_add():
            first = next(iter(o.sweep_string_iterator())) if o.is_sweep_override() else o.get_value_element_as_str()
            choices.append(f"{key}={first}")
        else:
            keys.append(key)
    if not keys:
        return
    try:
        with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
            cfg = compose(config_name, overrides=choices)
    except Exception:
        return  # an unknown group choice and the like: Hydra's message says it best
    known = _key_paths(OmegaConf.to_container(cfg, resolve=False)) | groups
    for key in keys:
        if key not in known:
            raise UsageError(
                f"unknown setting {key!r}{suggest(key, sorted(known))}; `python -m fetoolkit.{config_name} --cfg job` "
                "prints every setting"
            )


_OTHER_CONFIG_FLAGS = ("--config-name", "-cn", "--config-path", "-cp", "--config-dir", "-cd")


def hydra_job(main: Callable[[], Any], config_name: str) -> None:
    """Run a Hydra job's ``main`` as users start it: unknown settings refused first (exit 2), and
    ``--verbose`` meaning ``HYDRA_FULL_ERROR=1`` (whole tracebacks)."""
    if "--verbose" in sys.argv:
        sys.argv.remove("--verbose")
        os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        check_overrides(config_name, sys.argv[1:])
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    main()


def user_error_exit(e: BaseException) -> None:
    """Inside a Hydra job: a user error ends the run with one line and exit 2 (the traceback only
    with ``--verbose`` / ``HYDRA_FULL_ERROR=1``, where it is re-raised)."""
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        raise e
    print(f"error: {_text(e)}\n(--verbose or HYDRA_FULL_ERROR=1 shows the traceback)", file=sys.stderr)
    sys.exit(2)
