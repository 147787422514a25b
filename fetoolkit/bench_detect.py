"""``python -m fetoolkit.bench_detect``

Lives in :mod:`fetoolkit.jobs.bench_detect`; this module only keeps the ``python -m`` command short.
Nothing may import it (it is a job).
"""

import runpy

if __name__ == "__main__":
    runpy.run_module("fetoolkit.jobs.bench_detect", run_name="__main__", alter_sys=True)
