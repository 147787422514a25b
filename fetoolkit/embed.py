"""``python -m fetoolkit.embed``: lives in :mod:`fetoolkit.jobs.embed`; this module keeps the command short.

``fetoolkit.embed`` in Python is the one-call function of :mod:`fetoolkit.onecall`; importing this
module keeps it callable (see :func:`fetoolkit.cli_args.make_callable`).
"""

import runpy

from fetoolkit.cli_args import make_callable
from fetoolkit.onecall import embed

make_callable(__name__, embed)

if __name__ == "__main__":
    runpy.run_module("fetoolkit.jobs.embed", run_name="__main__", alter_sys=True)
