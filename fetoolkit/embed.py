"""``python -m fetoolkit.embed``

Lives in :mod:`fetoolkit.jobs.embed`; this module only keeps the ``python -m`` command short. Nothing may
import it (it is a job; ``fetoolkit.embed`` in Python is the one-call function of :mod:`fetoolkit.onecall`).
"""

import runpy

if __name__ == "__main__":
    runpy.run_module("fetoolkit.jobs.embed", run_name="__main__", alter_sys=True)
