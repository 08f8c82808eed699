"""Redis Streams as source and sink: a consumer group on the input stream, and output streams
written once per source event id.

A stream is addressed as ``redis://HOST:PORT/DB?stream=NAME`` (``rediss://`` and a password
in the URI work as redis-py takes them). The group is created at ``0`` (the whole stream) when
missing. The sink writes an entry and records its source id in the hash ``NAME:source-ids``
in one Lua script, so that an event delivered twice (its consumer died before acknowledging
it) is written once; the hash holds one short field per event written.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qs, urlencode, urlparse, urlunparse

from nbmlops.config import redacted
from nbmlops.errors import StreamError, UsageError
from nbmlops.streaming.adapters import Entry, Event

#: Writes each entry whose source id the hash KEYS[2] lacks to the stream KEYS[1], atomically.
#: ARGV: the number of entries, then for each: source id, number of fields, fields and values.
_WRITE_ONCE = """
local written, at = 0, 2
for _ = 1, tonumber(ARGV[1]) do
  local source_id, n = ARGV[at], tonumber(ARGV[at + 1])
  at = at + 2
  if redis.call('HEXISTS', KEYS[2], source_id) == 0 then
    local fields = {}
    for k = 0, 2 * n - 1 do fields[k + 1] = ARGV[at + k] end
    local id = redis.call('XADD', KEYS[1], '*', unpack(fields))
    redis.call('HSET', KEYS[2], source_id, id)
    written = written + 1
  end
  at = at + 2 * n
end
return written
"""


@dataclass(frozen=True)
class StreamAddress:
    """A Redis server and one stream on it."""

    url: str  # the server, without ``stream=``
    stream: str

    @classmethod
    def parse(cls, uri: str, option: str) -> StreamAddress:
        parsed = urlparse(uri)
        query = parse_qs(parsed.query)
        streams = query.pop("stream", [])
        if parsed.scheme not in ("redis", "rediss") or len(streams) != 1 or not streams[0]:
            raise UsageError(
                f"{option} {redacted(uri)!r} is not a Redis stream: give "
                "redis://HOST:PORT/DB?stream=NAME"
            )
        rest = urlencode({k: v[-1] for k, v in query.items()})
        return cls(urlunparse(parsed._replace(query=rest)), streams[0])

    def sibling(self, stream: str) -> StreamAddress:
        """Another stream on the same server."""
        return StreamAddress(self.url, stream)

    def __str__(self) -> str:
        return f"{redacted(self.url)}?stream={self.stream}"


def connect(address: StreamAddress):
    """A redis-py client of ``address``'s server, checked with a PING."""
    import redis

    client = redis.Redis.from_url(address.url, socket_timeout=30, socket_connect_timeout=5)
    try:
        client.ping()
    except redis.RedisError as exc:
        client.close()
        raise StreamError(
            f"cannot reach Redis at {redacted(address.url)} ({exc}); check that the server "
            "runs and the URI's host, port and password"
        ) from None
    return client


class RedisSource:
    """The events of ``address``'s stream for consumer ``consumer`` of group ``group``."""

    def __init__(self, address: StreamAddress, group: str, consumer: str) -> None:
        import redis

        self.address, self.group, self.consumer = address, group, consumer
        self._client = connect(address)
        try:
            self._client.xgroup_create(address.stream, group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._cursor = "0-0"  # where the next reclaim scan starts

    def read(self, count: int, block_ms: int) -> list[Event]:
        reply = self._client.xreadgroup(
            self.group, self.consumer, {self.address.stream: ">"}, count=count, block=block_ms
        )
        return [_event(i, f) for _, entries in reply or [] for i, f in entries]

    def reclaim(self, idle_ms: int, count: int) -> tuple[list[Event], bool]:
        """One pass of XAUTOCLAIM from where the last one stopped; entries deleted from the
        stream meanwhile are acknowledged (there is nothing left to score)."""
        reply = self._client.xautoclaim(
            self.address.stream, self.group, self.consumer, idle_ms, self._cursor, count=count
        )
        self._cursor = _text(reply[0])
        deleted = [_text(i) for i in reply[2]] if len(reply) > 2 else []
        if deleted:
            self.ack(deleted)
        events = [_event(i, f) for i, f in reply[1] if f is not None]
        return events, self._cursor != "0-0"

    def ack(self, ids: list[str]) -> None:
        if ids:
            self._client.xack(self.address.stream, self.group, *ids)

    def lag(self) -> dict[str, int | None]:
        for group in self._client.xinfo_groups(self.address.stream):
            if _text(group["name"]) == self.group:
                return {"lag": group.get("lag"), "pending": group.get("pending")}
        return {"lag": None, "pending": None}

    def close(self) -> None:
        self._client.close()


class RedisSink:
    """Entries appended to ``address``'s stream, once per source id."""

    def __init__(self, address: StreamAddress) -> None:
        self.address = address
        self._client = connect(address)
        self._script = self._client.register_script(_WRITE_ONCE)

    def write(self, entries: list[Entry]) -> int:
        if not entries:
            return 0
        args: list = [len(entries)]
        for entry in entries:
            args += [entry.source_id, len(entry.fields)]
            for key, value in entry.fields.items():
                args += [key, value]
        keys = [self.address.stream, f"{self.address.stream}:source-ids"]
        return int(self._script(keys=keys, args=args))

    def close(self) -> None:
        self._client.close()


def _event(entry_id, fields: dict) -> Event:
    entry_id = _text(entry_id)
    payload = fields.get(b"payload", fields.get("payload"))
    millis = int(entry_id.split("-", 1)[0])
    return Event(entry_id, None if payload is None else _text(payload), millis / 1000)


def _text(value) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
