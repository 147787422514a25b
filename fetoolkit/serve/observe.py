"""What the service tells its operators: Prometheus metrics and request ids.

``GET /metrics`` serves :class:`Metrics` in the Prometheus text format (one registry per app):

* ``fetoolkit_requests_total{route,status}`` and ``fetoolkit_request_seconds{route}`` (histogram);
* ``fetoolkit_in_flight`` (requests admitted to the model and not answered yet);
* ``fetoolkit_rejected_total{reason}``: ``busy``, ``too_large``, ``body_timeout``, ``unauthorized``,
  ``host``, ``timeout``, ``client_gone``;
* ``fetoolkit_stage_seconds{stage}``: ``decode``, ``detect`` (detection and alignment), ``embed``;
* drift of the verifications (``/api/verify`` answers): ``fetoolkit_verify_score`` (histogram of the
  cosines, buckets of 0.05 over [-1, 1]), ``fetoolkit_verify_llr`` (histogram of the decision
  profile's log likelihood ratios, buckets of 2 over [-30, 30]; with a profile only) and
  ``fetoolkit_verify_decisions_total{same,source}``. With a profile, ``fetoolkit_profile_info{profile_id,
  model,fmr}`` (1) and ``fetoolkit_profile_score{label,quantile}`` (the deciles of the profile's dev
  genuine and impostor scores) sit beside them, so live scores can be compared with the
  distribution the profile was made on (e.g. ``histogram_quantile(0.5, rate(fetoolkit_verify_score_bucket[1h]))``).
  These two histograms have no ``_sum`` series: the Prometheus client leaves it out of histograms
  with negative buckets (a sum of signed values cannot tell a counter reset).

Routes outside the API are counted as ``other``, so random paths cannot grow the label set.
Every answer carries an ``X-Request-ID`` (the client's, when it is a short token, else a new one).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import Scope

ROUTES = (
    "/api/extract-embedding",
    "/api/extract-embedding/batch",
    "/api/verify",
    "/api/health",
    "/metrics",
    "/openapi.json",
    "/docs",
    "/",
)
REJECT_REASONS = ("busy", "too_large", "body_timeout", "unauthorized", "host", "timeout", "client_gone")
STAGES = ("decode", "detect", "embed")
_LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
#: Upper bounds of the cosine histogram: -1, -0.95, ..., 1 (0.05 apart).
SCORE_BUCKETS = tuple(round(-1.0 + 0.05 * k, 2) for k in range(41))
#: Upper bounds of the LLR histogram: -30, -28, ..., 30 (natural log; beyond: the first / +Inf bucket).
LLR_BUCKETS = tuple(float(v) for v in range(-30, 31, 2))
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


class Metrics:
    """The service's counters and histograms (a registry of their own: apps in one process do
    not share them).

    Args:
        in_flight: called at each scrape for the in-flight gauge.
    """

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, in_flight: Callable[[], float]) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("fetoolkit_requests", "HTTP requests answered", ("route", "status"), registry=r)
        self.latency = Histogram(
            "fetoolkit_request_seconds", "time to answer", ("route",), buckets=_LATENCY_BUCKETS, registry=r
        )
        self.rejected = Counter("fetoolkit_rejected", "requests refused before the model", ("reason",), registry=r)
        self.stages = Histogram(
            "fetoolkit_stage_seconds", "time per stage of the work", ("stage",), buckets=_LATENCY_BUCKETS, registry=r
        )
        gauge = Gauge("fetoolkit_in_flight", "requests admitted and not answered", registry=r)
        gauge.set_function(in_flight)
        for reason in REJECT_REASONS:  # every series exists from the start (rate() needs a zero)
            self.rejected.labels(reason)
        for stage in STAGES:
            self.stages.labels(stage)
        self.verify_score = Histogram(
            "fetoolkit_verify_score", "cosine scores of /api/verify answers", buckets=SCORE_BUCKETS, registry=r
        )
        self.verify_llr = Histogram(
            "fetoolkit_verify_llr",
            "log likelihood ratios (decision profile) of /api/verify answers",
            buckets=LLR_BUCKETS,
            registry=r,
        )
        self.decisions = Counter("fetoolkit_verify_decisions", "/api/verify decisions", ("same", "source"), registry=r)
        self._profile_info = Gauge(
            "fetoolkit_profile_info", "the decision profile loaded (1)", ("profile_id", "model", "fmr"), registry=r
        )
        self._profile_scores = Gauge(
            "fetoolkit_profile_score",
            "deciles of the decision profile's dev scores (label genuine | impostor)",
            ("label", "quantile"),
            registry=r,
        )

    def request(self, path: str, status: int, seconds: float) -> None:
        """Count one answered request."""
        route = path if path in ROUTES else "other"
        self.requests.labels(route, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def stage(self, stage: str, seconds: float) -> None:
        """Time one stage of a request's work (called from pool threads)."""
        self.stages.labels(stage).observe(seconds)

    def verification(self, v: dict[str, Any]) -> None:
        """Record one /api/verify answer (``Verification`` as a dict: ``score``, ``llr``, ...)."""
        self.verify_score.observe(v["score"])
        if v.get("llr") is not None:
            self.verify_llr.observe(v["llr"])
        self.decisions.labels(str(bool(v["is_same_person"])).lower(), v["threshold_source"]).inc()

    def profile(self, profile_id: str, model: str, fmr: float, scores: dict[str, Any]) -> None:
        """Export the loaded decision profile: its id and the deciles of its dev scores
        (``scores``: the profile's ``scores``, ``deciles`` with ``genuine`` and ``impostor``)."""
        self._profile_info.labels(profile_id, model, f"{fmr:g}").set(1)
        for label in ("genuine", "impostor"):
            for q, v in zip(scores.get("deciles") or (), scores.get(label) or ()):
                self._profile_scores.labels(label, f"{q:.1f}").set(v)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)


def request_id(scope: Scope) -> str:
    """The client's ``X-Request-ID`` when it is a token of at most 64 safe characters, else a new id."""
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            v = value.decode("latin-1")
            if _REQUEST_ID.fullmatch(v):
                return v
            break
    return uuid.uuid4().hex
