"""One request's work ticket: its deadline and whether its client is still there.

The front door (:mod:`fetoolkit.serve.front`) makes a :class:`Work` when it admits a request and
marks it when the client disconnects; the service checks it between stages (before decoding,
before detection, before the model), so work nobody waits for is not started.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from fetoolkit.serve.errors import ClientGone, RequestTimeout


@dataclass
class Work:
    """Deadline and disconnect flag of one request (read by pool threads, set by the event loop).

    Attributes:
        timeout_s: the request's budget (``server.request_timeout_s``).
        started: ``time.monotonic()`` when the body had arrived.
        gone: the client disconnected.
    """

    timeout_s: float
    started: float = field(default_factory=time.monotonic)
    gone: bool = False

    @property
    def remaining_s(self) -> float:
        """Seconds left before the deadline (negative once past it)."""
        return self.started + self.timeout_s - time.monotonic()

    def check(self, stage: str) -> None:
        """Raise ``ClientGone`` or ``RequestTimeout`` instead of starting ``stage``."""
        if self.gone:
            raise ClientGone(f"the client disconnected before {stage}")
        if self.remaining_s <= 0:
            raise RequestTimeout(f"no answer within server.request_timeout_s={self.timeout_s:g} s (before {stage})")


def check(work: Work | None, stage: str) -> None:
    """:meth:`Work.check` when there is a ticket (the service is also called without HTTP)."""
    if work is not None:
        work.check(stage)
