"""``python -m fetoolkit.bench_extract``

Moved to :mod:`fetoolkit.jobs.bench_extract`; this module only keeps the ``python -m`` command working.
Nothing may import it (it is a job).
"""

import runpy

if __name__ == "__main__":
    runpy.run_module("fetoolkit.jobs.bench_extract", run_name="__main__", alter_sys=True)
