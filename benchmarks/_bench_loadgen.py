"""A small closed-loop HTTP load generator for bench_serving.py, run in its own process.

``concurrency`` connections (HTTP/1.1 keep-alive) each send the same pre-encoded POST, wait for
the whole answer, and send again: exactly ``concurrency`` requests are in flight at any time.
It uses bare asyncio streams on uvloop, not an HTTP client library, so that it costs little
CPU per request (the machine has 2 cores and the server under test needs one) and adds little
to the latencies it measures: on asyncio's own loop it spent ~0.2 ms of CPU per request, on
uvloop ~0.1 ms. Its own CPU time is reported so that a starved generator would show.
Requests that complete during the warm-up are not counted; those still in flight at the end
are not counted either.

Run::

    python _bench_loadgen.py --port P --path /predict --body FILE --concurrency 16 \
        --seconds 10 --warmup 1 [--expect-rows N]

and it prints one JSON object: ``requests``, ``seconds``, ``rps``, ``p50_ms``, ``p90_ms``,
``p99_ms``, ``max_ms``, ``statuses`` (non-200 answers by status, and ``"connection"`` for
dropped connections), ``bad_bodies`` (200 answers whose body was checked and was wrong) and
``cpu_seconds`` (user + system time of this process while it ran); and ``ok_total``, every
200 answer of the whole run, warm-up and the requests still in flight at the end included (what
the server logged, to check its prediction log against).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

import uvloop


def build_request(host: str, port: int, path: str, body: bytes) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\n"
        f"Host: {host}:{port}\r\n"
        "Content-Type: application/json\r\n"
        "Accept: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: keep-alive\r\n"
        "\r\n"
    )
    return head.encode("ascii") + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    """``(status, body, keep_alive)`` of one HTTP/1.1 answer (Content-Length or chunked)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        parts = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                break
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)
        body = b"".join(parts)
    else:
        body = await reader.read()
        return status, body, False
    return status, body, headers.get("connection", "").lower() != "close"


def rows_in(body: bytes) -> int:
    """How many predictions a 200 answer holds (nbmlops' and MLflow's formats alike)."""
    payload = json.loads(body)
    predictions = payload["predictions"] if isinstance(payload, dict) else payload
    return len(predictions)


class Load:
    def __init__(self, args: argparse.Namespace, request: bytes) -> None:
        self.args = args
        self.request = request
        self.latencies: list[float] = []
        self.statuses: Counter[str] = Counter()
        self.bad_bodies = 0
        self.checked = 0
        self.ok_total = 0  # every 200 answer, in the measured window or not
        self.t_measure = 0.0
        self.t_end = 0.0

    async def connection(self) -> None:
        args = self.args
        reader = writer = None
        checked_this_connection = False
        while True:
            start = time.perf_counter()
            if start >= self.t_end:
                break
            if writer is None:
                try:
                    reader, writer = await asyncio.open_connection(args.host, args.port)
                except OSError:
                    if self.t_measure <= time.perf_counter() <= self.t_end:
                        self.statuses["connection"] += 1
                    await asyncio.sleep(0.01)
                    continue
                checked_this_connection = False
                start = time.perf_counter()
            try:
                writer.write(self.request)
                status, body, keep_alive = await read_response(reader)
            except (ConnectionError, asyncio.IncompleteReadError, OSError):
                done = time.perf_counter()
                if self.t_measure <= done <= self.t_end:
                    self.statuses["connection"] += 1
                writer.close()
                writer = None
                continue
            done = time.perf_counter()
            if status == 200:
                self.ok_total += 1
            if not self.t_measure <= done <= self.t_end:
                if not keep_alive:
                    writer.close()
                    writer = None
                continue
            self.latencies.append(done - start)
            if status != 200:
                self.statuses[str(status)] += 1
            elif not checked_this_connection and args.expect_rows:
                # Parse one answer per connection: enough to catch a wrong body, cheap enough
                # not to load the generator.
                checked_this_connection = True
                self.checked += 1
                try:
                    if rows_in(body) != args.expect_rows:
                        self.bad_bodies += 1
                except (ValueError, KeyError, TypeError):
                    self.bad_bodies += 1
            if not keep_alive:
                writer.close()
                writer = None
        if writer is not None:
            writer.close()

    async def run(self) -> dict:
        now = time.perf_counter()
        self.t_measure = now + self.args.warmup
        self.t_end = self.t_measure + self.args.seconds
        cpu0 = _cpu()
        await asyncio.gather(*(self.connection() for _ in range(self.args.concurrency)))
        cpu = _cpu() - cpu0
        lat = sorted(self.latencies)
        n = len(lat)
        return {
            "requests": n,
            "seconds": self.args.seconds,
            "rps": n / self.args.seconds,
            "p50_ms": percentile(lat, 50) * 1000,
            "p90_ms": percentile(lat, 90) * 1000,
            "p99_ms": percentile(lat, 99) * 1000,
            "max_ms": (lat[-1] * 1000) if lat else float("nan"),
            "mean_ms": (statistics.fmean(lat) * 1000) if lat else float("nan"),
            "statuses": dict(self.statuses),
            "errors": sum(self.statuses.values()) + self.bad_bodies,
            "bad_bodies": self.bad_bodies,
            "checked_bodies": self.checked,
            "ok_total": self.ok_total,
            "cpu_seconds": cpu,
            "wall_seconds": time.perf_counter() - now,
        }


def percentile(sorted_values: list[float], q: float) -> float:
    """The nearest-rank percentile of already sorted values."""
    if not sorted_values:
        return float("nan")
    rank = max(1, -(-len(sorted_values) * q // 100))
    return sorted_values[int(rank) - 1]


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", required=True, help="e.g. /predict or /invocations")
    parser.add_argument("--body", type=Path, required=True, help="file with the JSON body")
    parser.add_argument("--concurrency", type=int, default=1, help="requests in flight")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured duration")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured lead-in")
    parser.add_argument(
        "--expect-rows", type=int, default=0, help="check that answers hold this many predictions"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    request = build_request(args.host, args.port, args.path, args.body.read_bytes())
    result = uvloop.run(Load(args, request).run())
    json.dump(result, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
