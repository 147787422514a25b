"""``python -m fetoolkit.verify``: lives in :mod:`fetoolkit.jobs.verify`; this module keeps the command short.

``fetoolkit.verify`` in Python is the one-call function of :mod:`fetoolkit.onecall`; importing this
module keeps it callable (see :func:`fetoolkit.cli_args.make_callable`).
"""

import runpy

from fetoolkit.cli_args import make_callable
from fetoolkit.onecall import verify

make_callable(__name__, verify)

if __name__ == "__main__":
    runpy.run_module("fetoolkit.jobs.verify", run_name="__main__", alter_sys=True)
