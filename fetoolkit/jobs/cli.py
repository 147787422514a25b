"""``fetoolkit JOB [ARGS...]``: the console script; runs ``python -m fetoolkit.jobs.JOB ARGS...``.

``fetoolkit eval model=arcface`` is ``python -m fetoolkit.eval model=arcface``; ``fetoolkit``
alone lists the jobs. Installed by ``pip install`` (``[project.scripts]`` in ``pyproject.toml``).
"""

from __future__ import annotations

import logging
import pkgutil
import runpy
import sys
from collections.abc import Sequence

log = logging.getLogger(__name__)

#: Modules of ``fetoolkit.jobs`` that are not jobs.
NOT_JOBS = frozenset({"cli"})


def jobs() -> list[str]:
    """The job names, from the modules of ``fetoolkit.jobs`` (no list to keep in step)."""
    import fetoolkit.jobs as package

    return sorted(m.name for m in pkgutil.iter_modules(package.__path__) if m.name not in NOT_JOBS)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the job named by ``argv[0]`` with the rest of ``argv``; returns the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    names = jobs()
    if not args or args[0] in ("-h", "--help", "help"):
        logging.basicConfig(level=logging.INFO, format="%(message)s")
        log.info("usage: fetoolkit JOB [ARGS...]  (= python -m fetoolkit.JOB ARGS...)\njobs: %s", " ".join(names))
        return 0 if args else 2
    job, rest = args[0], args[1:]
    if job not in names:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
        log.error("fetoolkit: no job %r; jobs: %s", job, " ".join(names))
        return 2
    sys.argv = [f"fetoolkit {job}", *rest]
    try:
        runpy.run_module(f"fetoolkit.jobs.{job}", run_name="__main__", alter_sys=True)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    return 0
