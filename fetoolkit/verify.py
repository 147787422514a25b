"""``python -m fetoolkit.verify``: lives in :mod:`fetoolkit.jobs.verify`; this module keeps the command short.

``fetoolkit.verify`` in Python is the one-call function of :mod:`fetoolkit.onecall`. Importing this
module (``import fetoolkit.verify``) makes Python bind the *module* to that name on the package, so the
module is made callable as the function: ``fetoolkit.verify(...)`` works either way.
"""

import runpy
import sys
import types
from typing import Any

from fetoolkit.onecall import verify as _verify


class _CallableModule(types.ModuleType):
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return _verify(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule

if __name__ == "__main__":
    runpy.run_module("fetoolkit.jobs.verify", run_name="__main__", alter_sys=True)
