"""``python -m fetoolkit.cache verify|prune|clear``; the job is :mod:`fetoolkit.jobs.cache`."""

import runpy

if __name__ == "__main__":
    runpy.run_module("fetoolkit.jobs.cache", run_name="__main__", alter_sys=True)
