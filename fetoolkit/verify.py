"""``python -m fetoolkit.verify``

Lives in :mod:`fetoolkit.jobs.verify`; this module only keeps the ``python -m`` command short. Nothing may
import it (it is a job; ``fetoolkit.verify`` in Python is the one-call function of :mod:`fetoolkit.onecall`).
"""

import runpy

if __name__ == "__main__":
    runpy.run_module("fetoolkit.jobs.verify", run_name="__main__", alter_sys=True)
