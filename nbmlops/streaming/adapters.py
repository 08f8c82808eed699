"""The boundary between scoring and a broker: a source of events and a sink for answers.

A consumer reads events from a :class:`Source`, scores them, writes each answer (or its
dead letter) to a :class:`Sink`, and only then acknowledges the events at the source. Delivery
is at least once: an event read but not acknowledged (its consumer died) is delivered again.
The sink makes that exactly once in its output: it writes one entry per source event id, and
skips an event whose id it has written before.

Redis Streams implement both (:mod:`nbmlops.streaming.redis_streams`). A Kafka adapter maps
onto the same two classes: a consumer group's partitions are the source, ``read`` is a poll,
``ack`` commits the offsets after the sink's write, ``reclaim`` is what a rebalance hands
over; the sink is a topic keyed by the source's ``topic/partition/offset``, idempotent through
a compacted topic or a transactional producer. Scoring does not change.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Event:
    """One event of the source: its id, its payload (one record as JSON; None when the event
    has no ``payload`` field) and when the broker received it (seconds, epoch)."""

    id: str
    payload: str | None
    received: float


@dataclass(frozen=True)
class Entry:
    """What the sink writes for one source event: its fields, in order."""

    source_id: str
    fields: dict[str, str]


class Source(Protocol):
    """Events for one consumer of one group."""

    def read(self, count: int, block_ms: int) -> list[Event]:
        """New events, at most ``count``, waiting at most ``block_ms`` for the first."""

    def reclaim(self, idle_ms: int, count: int) -> tuple[list[Event], bool]:
        """Events delivered to a consumer that has not acknowledged them for ``idle_ms``, and
        whether more may be left to reclaim (a scan goes on where the last call stopped)."""

    def ack(self, ids: list[str]) -> None:
        """Acknowledge events whose answers the sink holds."""

    def lag(self) -> dict[str, int | None]:
        """``{"lag": events not yet delivered to the group, "pending": delivered, not acked}``."""

    def close(self) -> None: ...


class Sink(Protocol):
    """Answers, once per source event id."""

    def write(self, entries: list[Entry]) -> int:
        """Write each entry unless one with its ``source_id`` was written before; returns how
        many were written. All or none of one call's entries are written."""

    def close(self) -> None: ...
