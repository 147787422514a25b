"""``python -m fetoolkit.soak``

Lives in :mod:`fetoolkit.jobs.soak`; this module only keeps the ``python -m`` command short.
Nothing may import it (it is a job).
"""

import runpy

if __name__ == "__main__":
    runpy.run_module("fetoolkit.jobs.soak", run_name="__main__", alter_sys=True)
