"""``python -m fetoolkit.bench_serve``

Moved to :mod:`fetoolkit.jobs.bench_serve`; this module only keeps the ``python -m`` command working.
Nothing may import it (it is a job).
"""

import runpy

if __name__ == "__main__":
    runpy.run_module("fetoolkit.jobs.bench_serve", run_name="__main__", alter_sys=True)
