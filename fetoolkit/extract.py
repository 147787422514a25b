"""``python -m fetoolkit.extract``

The job is :mod:`fetoolkit.jobs.extract` (the library: :mod:`fetoolkit.extract_run`); this module
only keeps the ``python -m`` command working. Nothing may import it (it is a job).
"""

import runpy

if __name__ == "__main__":
    runpy.run_module("fetoolkit.jobs.extract", run_name="__main__", alter_sys=True)
