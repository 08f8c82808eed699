"""The stream consumer: read, score, log, write, acknowledge; at least once, output once.

Each turn takes a batch of events (at most ``batch_size``: what has arrived, waiting at most
``block_ms`` for the first), then: the log is written (committed), then the sink entries and
dead letters (each once per source id), then the events are acknowledged. A consumer that
dies anywhere in between leaves its events pending; after ``claim_idle`` seconds another (or
its restart) reclaims them, scores them again, logs only what was not logged and writes only
what was not written. SIGTERM finishes the batch in hand and returns.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import dataclass

from nbmlops.config import Settings
from nbmlops.errors import LogError, UsageError
from nbmlops.predlog.log import PredictionLog
from nbmlops.registry.refs import followed_alias
from nbmlops.registry.registry import Registry
from nbmlops.streaming.adapters import Event, Sink, Source
from nbmlops.streaming.metrics import StreamMetrics
from nbmlops.streaming.redis_streams import RedisSink, RedisSource, StreamAddress
from nbmlops.streaming.scoring import EventScorer

logger = logging.getLogger("nbmlops.stream")


@dataclass(frozen=True)
class StreamOptions:
    """What a user asks of a consumer (``nbmlops stream``, the magic and the API alike)."""

    source: str
    group: str
    sink: str | None = None  # default: the source's stream + "-scored", same server
    dead_letter: str | None = None  # a stream name on the source's server; default IN-dead
    consumer: str | None = None  # default: HOST-PID
    batch_size: int = 500
    block_ms: int = 1000
    claim_idle: float = 30.0
    metrics_port: int | None = None
    unknown_categories: str = "reject"
    follow_interval: float = 2.0

    def addresses(self) -> tuple[StreamAddress, StreamAddress, StreamAddress]:
        """Source, sink and dead-letter streams, checked."""
        if not self.group or not self.group.strip():
            raise UsageError("--group is empty: name the consumer group, e.g. --group scorers")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise UsageError(f"--batch-size {self.batch_size!r} is not a whole number >= 1")
        if not self.claim_idle > 0 or not self.block_ms > 0:
            raise UsageError("--claim-idle and --block-ms must be positive")
        if self.unknown_categories not in ("reject", "allow"):
            raise UsageError("--unknown-categories: choose 'reject' (default) or 'allow'")
        source = StreamAddress.parse(self.source, "--source")
        sink = (
            StreamAddress.parse(self.sink, "--sink")
            if self.sink
            else source.sibling(f"{source.stream}-scored")
        )
        dead = source.sibling(self.dead_letter or f"{source.stream}-dead")
        if len({source.stream, sink.stream, dead.stream}) < 3 and sink.url == source.url:
            raise UsageError("--source, --sink and --dead-letter must be three different streams")
        return source, sink, dead


@dataclass(frozen=True)
class StreamSummary:
    """What a consumer did before it stopped."""

    model: str
    version: str
    consumer: str
    scored: int
    dead_letters: int
    reclaimed: int
    seconds: float

    def __str__(self) -> str:
        rate = self.scored / self.seconds if self.seconds else 0.0
        return (
            f"{self.model} v{self.version}, consumer {self.consumer}: {self.scored:,} events "
            f"scored, {self.dead_letters:,} dead letters, {self.reclaimed:,} reclaimed from "
            f"stopped consumers, in {self.seconds:.1f} s ({rate:,.0f} events/s)"
        )


class StreamConsumer:
    """Scores a stream with ``model`` (an alias is followed) until :meth:`stop`."""

    def __init__(self, model: str, options: StreamOptions, settings: Settings) -> None:
        source, sink, dead = options.addresses()
        self.options = options
        self.consumer = options.consumer or f"{socket.gethostname()}-{os.getpid()}"
        self.registry = Registry(settings)
        version = self.registry.resolve(model)
        self.alias = followed_alias(model, version.aliases)
        self.scorer = EventScorer(self.registry, version, options.unknown_categories)
        self.id_prefix = f"{source.stream}/{options.group}/"
        self.log = PredictionLog(settings.log_uri)
        self.source: Source = RedisSource(source, options.group, self.consumer)
        self.sink: Sink = RedisSink(sink)
        self.dead: Sink = RedisSink(dead)
        self.addresses = (source, sink, dead)
        self.metrics = StreamMetrics(options.metrics_port)
        self.counts = {"scored": 0, "dead": 0, "reclaimed": 0}
        self._stopping = False
        self._followed = time.monotonic()
        self._next_claim = 0.0  # reclaim first: a restart picks up what it left

    def stop(self) -> None:
        """Finish the batch in hand, acknowledge it, and return from :meth:`run`."""
        self._stopping = True

    def run(self) -> StreamSummary:
        started = time.monotonic()
        try:
            while not self._stopping:
                self._follow()
                events, reclaimed = self._next_events()
                if events:
                    self._handle(events, reclaimed)
                self.metrics.observe_lag(self.source)
        finally:
            self.close()
        return StreamSummary(
            self.scorer.name,
            self.scorer.version,
            self.consumer,
            self.counts["scored"],
            self.counts["dead"],
            self.counts["reclaimed"],
            time.monotonic() - started,
        )

    def close(self) -> None:
        """Close the connections to the broker and the log, and the metrics endpoint."""
        for part in (self.source, self.sink, self.dead, self.log):
            part.close()
        self.metrics.close()

    def _next_events(self) -> tuple[list[Event], bool]:
        """Events left pending by a stopped consumer when a reclaim is due, else new ones."""
        options = self.options
        if time.monotonic() >= self._next_claim:
            events, more = self.source.reclaim(int(options.claim_idle * 1000), options.batch_size)
            if not more:
                self._next_claim = time.monotonic() + max(options.claim_idle / 2, 0.5)
            if events:
                return events, True
        return self.source.read(options.batch_size, options.block_ms), False

    def _handle(self, events: list[Event], reclaimed: bool) -> None:
        """Score, log, write and acknowledge one batch; while the log is down, retry it
        (nothing is written or acknowledged before it is logged)."""
        batch = self.scorer.score(events, self.id_prefix, self.consumer)
        while True:
            try:
                rows = batch.log
                if reclaimed:
                    known = self.log.logged([r.id for r in rows])
                    rows = [r for r in rows if r.id not in known]
                self.log.write(rows)
                break
            except LogError as exc:
                if self._stopping:
                    return  # left pending: the next consumer reclaims it
                logger.error("%s; retrying in 1 s", exc)
                time.sleep(1.0)
        written = self.sink.write(batch.entries)
        self.dead.write(batch.dead)
        self.source.ack([e.id for e in events])
        self.counts["scored"] += len(batch.entries)
        self.counts["dead"] += len(batch.dead)
        self.counts["reclaimed"] += len(events) if reclaimed else 0
        self.metrics.observe_batch(
            len(events), len(batch.entries), len(batch.dead), written, batch.model_seconds
        )

    def _follow(self) -> None:
        """Load the version the alias points at when it moved (between two batches)."""
        now = time.monotonic()
        if self.alias is None or now - self._followed < self.options.follow_interval:
            return
        self._followed = now
        name = self.scorer.name
        try:
            found = self.registry.alias_version(name, self.alias)
            if found is None or found == self.scorer.version:
                return
            version = self.registry.get(name, found)
            self.scorer = EventScorer(self.registry, version, self.options.unknown_categories)
        except Exception as exc:  # noqa: BLE001 - the loaded version goes on scoring
            logger.error("could not follow %s@%s: %s", name, self.alias, exc)
            return
        logger.warning("%s@%s moved: now scoring with v%s", name, self.alias, found)
