"""The versions one server runs and how a request is routed among them.

A :class:`Deployment` holds one :class:`~nbmlops.serving.service.Service` per version: the
primary, and optionally a canary (a share of the requests, ``weight``, picked at random or by a
hash of a sticky header) or a shadow (scores a share of the requests off the response path;
only the primary answers). They share one prediction log and one metrics registry, and each
logged prediction names its route and version.

A request the canary fails (the model raised, or it refused input the primary accepts) is
answered by the primary and counted as a canary failure. A shadow's failures and its latency
never reach the caller. The canary's weight can change while the server runs
(:meth:`Deployment.set_weight`): what an automatic rollback or a progressive rollout needs.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import time

from nbmlops.serving.analysis import IntervalCounts
from nbmlops.serving.config import CANARY, PRIMARY, SHADOW
from nbmlops.serving.options import check_share
from nbmlops.serving.responses import HTTPProblem, logger
from nbmlops.serving.service import Service

#: Shadow requests scoring at once, at most; beyond, a request is not shadowed (and counted).
MAX_SHADOW_PENDING = 256
#: How long stopping waits for the shadow requests still scoring.
SHADOW_DRAIN_SECONDS = 5.0


def sticky_share(value: str) -> float:
    """Where a sticky key falls in [0, 1): the same key always falls in the same place, in every
    process (a stable hash, unlike ``hash()``)."""
    digest = hashlib.blake2b(value.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


class Deployment:
    """The primary, and optionally a canary or a shadow, with the routing between them."""

    def __init__(
        self,
        primary: Service,
        *,
        canary: Service | None = None,
        weight: float = 0.0,
        sticky: str | None = None,
        shadow: Service | None = None,
        shadow_fraction: float = 1.0,
    ) -> None:
        self.primary = primary
        self.canary = canary
        self.shadow = shadow
        self.sticky = sticky.lower() if sticky else None
        self.sticky_header = self.sticky.encode("latin-1") if self.sticky else None
        self.shadow_fraction = check_share(shadow_fraction, "--shadow-fraction")
        self._random = random.Random()
        self._shadowing: set[asyncio.Task] = set()
        #: each route's requests, failures and latencies since the canary analysis last looked
        self.counts = IntervalCounts()
        self.weight = 0.0
        self.set_weight(weight)
        if shadow is not None:
            primary.metrics.set_weight(SHADOW, shadow.version, self.shadow_fraction)

    @property
    def services(self) -> list[Service]:
        return [s for s in (self.primary, self.canary, self.shadow) if s is not None]

    def set_weight(self, weight: float) -> None:
        """Send ``weight`` of the requests to the canary from now on (0 stops it)."""
        weight = check_share(weight, "--weight")
        self.weight = weight if self.canary is not None else 0.0
        self.primary.metrics.set_weight(PRIMARY, self.primary.version, 1.0 - self.weight)
        if self.canary is not None:
            self.primary.metrics.set_weight(CANARY, self.canary.version, self.weight)

    def replace_primary(self, service: Service) -> list[Service]:
        """Answer with ``service`` (already started) from now on; a canary or shadow of its
        version is no longer needed. Returns the services replaced, to drain."""
        before, replaced = self.primary, [self.primary]
        self.primary = service
        metrics = service.metrics
        metrics.set_weight(PRIMARY, before.version, 0.0)
        metrics.answering(service.version, before.version)
        if self.canary is not None and self.canary.version == service.version:
            metrics.set_weight(CANARY, self.canary.version, 0.0)
            replaced.append(self.canary)
            self.canary = None
        if self.shadow is not None and self.shadow.version == service.version:
            metrics.set_weight(SHADOW, self.shadow.version, 0.0)
            replaced.append(self.shadow)
            self.shadow = None
        self.set_weight(self.weight if self.canary is not None else 0.0)
        return replaced

    def routes(self) -> list[dict]:
        """Each route with its version and share of requests, as ``/metadata`` shows them."""
        shown = [{"route": PRIMARY, "version": self.primary.version, "weight": 1.0 - self.weight}]
        if self.canary is not None:
            shown.append(
                {
                    "route": CANARY,
                    "version": self.canary.version,
                    "weight": self.weight,
                    "sticky": self.sticky,
                }
            )
        if self.shadow is not None:
            shown.append(
                {"route": SHADOW, "version": self.shadow.version, "fraction": self.shadow_fraction}
            )
        return shown

    def route(self, sticky_value: str | None = None) -> Service:
        """The service that answers a request: the canary for ``weight`` of them (for one
        sticky key, always the same one), else the primary."""
        if self.canary is None or self.weight <= 0.0:
            return self.primary
        share = sticky_share(sticky_value) if sticky_value is not None else self._random.random()
        return self.canary if share < self.weight else self.primary

    async def predict_records(
        self, records, endpoint: str, started: float, request_id: str, sticky_value=None
    ) -> tuple[list[dict], Service]:
        """The answers for one request and the service that gave them."""
        chosen = self.route(sticky_value)
        if chosen is self.canary:
            return await self._canary(records, endpoint, started, request_id)
        answers = await self.primary.predict_records(records, endpoint, started, request_id)
        if self.canary is not None:
            self.counts.add(PRIMARY, time.perf_counter() - started, False, _predicted(answers))
        if self.shadow is not None and self._random.random() < self.shadow_fraction:
            self._start_shadow(records, endpoint, request_id, [a["id"] for a in answers])
        return answers, self.primary

    async def _canary(self, records, endpoint, started, request_id):
        canary = self.canary
        try:
            answers = await canary.predict_records(records, endpoint, started, request_id)
            self.counts.add(CANARY, time.perf_counter() - started, False, _predicted(answers))
            return answers, canary
        except HTTPProblem as problem:
            # the primary decides whether the input is the caller's fault: if it refuses it
            # too, its refusal is the answer and the canary did nothing wrong
            seconds = time.perf_counter() - started
            answers = await self.primary.predict_records(records, endpoint, started, request_id)
            canary.log_rejection(endpoint, _shown(records), problem, started)
            canary.metrics.route_failed(CANARY, canary.version, "rejected")
            self.counts.add(CANARY, seconds, failed=True)
        except Exception as exc:  # noqa: BLE001 - a bad canary never fails its caller
            logger.warning(
                "request %s: the canary failed (%s); the primary answers", request_id, exc
            )
            canary.metrics.route_failed(CANARY, canary.version, "model")
            self.counts.add(CANARY, time.perf_counter() - started, failed=True)
            answers = await self.primary.predict_records(records, endpoint, started, request_id)
        return answers, self.primary

    def _start_shadow(self, records, endpoint, request_id, primary_ids) -> None:
        if len(self._shadowing) >= MAX_SHADOW_PENDING:
            self.shadow.metrics.route_failed(SHADOW, self.shadow.version, "overloaded")
            return
        task = asyncio.get_running_loop().create_task(
            self._score_shadow(records, endpoint, request_id, primary_ids)
        )
        self._shadowing.add(task)
        task.add_done_callback(self._shadowing.discard)

    async def _score_shadow(self, records, endpoint, request_id, primary_ids) -> None:
        """Score one request in the shadow, off the response path: nothing it does reaches the
        caller, whose answer has already gone."""
        shadow = self.shadow
        started = time.perf_counter()
        status = 200
        try:
            await shadow.predict_records(records, endpoint, started, request_id, links=primary_ids)
        except HTTPProblem as problem:
            status = problem.status
            shadow.log_rejection(endpoint, _shown(records), problem, started)
            shadow.metrics.route_failed(SHADOW, shadow.version, "rejected")
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a shadow's failure is its own
            status = 500
            logger.warning("request %s: the shadow failed: %s", request_id, exc)
            shadow.metrics.route_failed(SHADOW, shadow.version, "model")
        shadow.metrics.observe_request(
            endpoint, status, time.perf_counter() - started, SHADOW, shadow.version
        )

    def start(self) -> None:
        for service in self.services:
            service.batcher.start()

    async def stop(self) -> None:
        """Let the shadow requests still scoring finish (a while), then stop every batcher."""
        if self._shadowing:
            await asyncio.wait(set(self._shadowing), timeout=SHADOW_DRAIN_SECONDS)
        for service in self.services:
            await service.batcher.stop()
        self.primary.log.close()


def _predicted(answers: list[dict]) -> list:
    """The predictions of a request's answers, for the canary analysis's drift test."""
    return [answer.get("prediction") for answer in answers]


def _shown(records) -> bytes:
    """The first records of a request, as a refusal's log row shows them."""
    shown = records[:20] if isinstance(records, list) else records
    return json.dumps(shown, default=str).encode()
