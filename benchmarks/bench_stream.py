"""Benchmark: ``nbmlops stream`` end to end on a real redis-server, with one and two consumers,
against the consumer a user would write by hand.

Run from the repository root::

    .venv/bin/python benchmarks/bench_stream.py [--events N] [--rate R] [--no-readme]

In one run, in a temporary directory (store, redis-server and its files; nothing in the
repository):

1. Fit the quickstart's pipeline on ``make_churn(20,000)`` and package it with ``featurize``
   (from _bench_pipeline) as ``churn``, production alias set.
2. Start ``redis-server`` (Debian's) on a free loopback port, no persistence.
3. For each consumer set (``nbmlops stream churn@production`` x1, x2 in one group, and the
   hand-written consumer of ``_bench_stream_naive.py``: redis-py and ``mlflow.pyfunc`` on the
   same artifact, batches of 500, no checks, log, dead letters or deduplication), on a fresh
   stream:

   - saturation: ``--events`` events (one churn record each, as JSON) are XADDed in pipelined
     chunks of 1,000 as fast as the producer can; events/s end to end is the events divided by
     the time from the first event's XADD to the last sink entry's XADD (both from the stream
     ids, in the Redis server's clock); the latency of each event is its sink entry's id time
     minus its own (p50, p99; with a backlog this is mostly queueing);
   - paced: ``--rate`` events/s for ``--seconds`` seconds (bursts of 10 every 10 ms), the
     latency p50/p99 of events that find no backlog.

   Each consumer is its own process (its own process group), started before the clock and
   stopped with SIGTERM after (nbmlops' must exit 0).
4. Agreement: every saturation run's sink holds one entry per event, and nbmlops' predictions
   equal ``nbmlops.load("churn").predict`` on the same records in this process.
5. The floor: the artifact's preprocessing and estimator alone on batches of 500 in this
   process (``LoadedModel.predictor.score``), as events/s.

Results (a Markdown table) go to stdout and between the bench_stream markers in
benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
START = "<!-- bench_stream:start -->"
END = "<!-- bench_stream:end -->"
VERSIONS_OF = ("nbmlops", "redis", "mlflow", "scikit-learn", "pandas")

sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))
import bench_package  # noqa: E402 - shared helpers (CPU model, git commit, README intro)

SECTION_INTRO = """## bench_stream.py: `nbmlops stream` end to end on Redis Streams

XADD to sink entry, one and two consumers in one group, against a hand-written redis-py +
`mlflow.pyfunc` consumer on the same artifact (see the docstring of `bench_stream.py`).

"""


@dataclass
class Result:
    name: str
    events: int = 0
    seconds: float = float("nan")
    latency: list[float] = field(default_factory=list)  # saturation, ms
    paced: list[float] = field(default_factory=list)  # paced, ms
    exit_codes: list[int | None] = field(default_factory=list)
    answers: dict[str, str] = field(default_factory=dict)  # source id -> prediction

    @property
    def rate(self) -> float:
        return self.events / self.seconds


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_redis(directory: Path) -> tuple[subprocess.Popen, str]:
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("bench_stream: redis-server is missing (apt-get install redis-server)")
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        + ["--dir", str(directory)],
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"redis://127.0.0.1:{port}/0"
    import redis

    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + 20
    while True:
        try:
            client.ping()
            return proc, url
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                sys.exit("bench_stream: redis-server did not start")
            time.sleep(0.05)


def package_model(home: Path):
    from _bench_pipeline import build_pipeline, churn_split, featurize

    import nbmlops
    from nbmlops.config import Settings

    settings = Settings.from_env({"NBMLOPS_HOME": str(home)})
    split = churn_split(20_000)
    model = build_pipeline().fit(featurize(split.X_train), split.y_train)
    nbmlops.package(
        "churn",
        model,
        split.X_train,
        target=split.y_train,
        preprocess=[featurize],
        eval=(split.X_test, split.y_test),
        alias="production",
        settings=settings,
    )
    return settings


def start_consumers(argvs: list[list[str]], env: dict, ready: str) -> list[subprocess.Popen]:
    procs = []
    for argv in argvs:
        proc = subprocess.Popen(
            argv,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        procs.append(proc)
        line = proc.stdout.readline()
        if not line.startswith(ready):
            stop_consumers(procs)
            sys.exit(f"bench_stream: a consumer did not start: {line}{proc.stdout.read()[-2000:]}")
    return procs


def stop_consumers(procs: list[subprocess.Popen]) -> list[int | None]:
    codes = []
    for proc in procs:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    for proc in procs:
        try:
            proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
        codes.append(proc.returncode)
    return codes


def millis(entry_id: str) -> int:
    return int(entry_id.split("-", 1)[0])


def saturate(client, stream: str, payloads: list[str]) -> tuple[float, list[float], dict]:
    """XADD every payload as fast as possible; (seconds end to end, latencies ms, answers)."""
    first = None
    for start in range(0, len(payloads), 1000):
        pipe = client.pipeline(transaction=False)
        for payload in payloads[start : start + 1000]:
            pipe.xadd(stream, {"payload": payload})
        ids = pipe.execute()
        first = first or ids[0]
    sink = f"{stream}-scored"
    deadline = time.monotonic() + 600
    while client.xlen(sink) < len(payloads):
        if time.monotonic() > deadline:
            sys.exit(f"bench_stream: {sink} has {client.xlen(sink)} of {len(payloads)} answers")
        time.sleep(0.05)
    answers, latencies, last = {}, [], 0
    for entry_id, fields in client.xrange(sink):
        source = fields[b"source_id"].decode()
        answers[source] = fields[b"prediction"].decode()
        latencies.append(millis(entry_id.decode()) - millis(source))
        last = max(last, millis(entry_id.decode()))
    if len(answers) != len(payloads):
        sys.exit(f"bench_stream: {len(answers)} distinct answers for {len(payloads)} events")
    return (last - millis(first.decode())) / 1000, latencies, answers


def paced(client, stream: str, payloads: list[str], rate: float, seconds: float) -> list[float]:
    """``rate`` events/s for ``seconds`` (bursts of 10); the latencies of those events, ms."""
    sink = f"{stream}-scored"
    before = client.xlen(sink)
    sent, started = 0, time.monotonic()
    while time.monotonic() - started < seconds:
        due = int((time.monotonic() - started) * rate)
        pipe = client.pipeline(transaction=False)
        for _ in range(max(0, min(due - sent, 10))):
            pipe.xadd(stream, {"payload": payloads[sent % len(payloads)]})
            sent += 1
        pipe.execute()
        time.sleep(0.01)
    deadline = time.monotonic() + 120
    while client.xlen(sink) < before + sent and time.monotonic() < deadline:
        time.sleep(0.05)
    entries = client.xrange(sink)[before:]
    return [millis(i.decode()) - millis(f[b"source_id"].decode()) for i, f in entries]


def run_set(name, argvs, env, ready, client, payloads, args) -> Result:
    """One consumer set on its own stream; ``argvs(stream)`` gives the consumers' commands."""
    stream = f"bench-{len(name)}-{time.time_ns()}"
    client.xgroup_create(stream, "bench", id="0", mkstream=True)
    procs = start_consumers(argvs(stream), env, ready)
    result = Result(name, events=len(payloads))
    try:
        result.seconds, result.latency, result.answers = saturate(client, stream, payloads)
        result.paced = paced(client, stream, payloads, args.rate, args.seconds)
    finally:
        result.exit_codes = stop_consumers(procs)
    return result


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def render(results: list[Result], floor: float, args, agreement: str) -> str:
    ours = results[0]
    lines = [
        "| consumer | events | events/s end to end | vs hand-written | latency p50 / p99 "
        "at saturation (ms) | latency p50 / p99 at "
        f"{args.rate:,.0f} events/s (ms) | exit codes |",
        "|---|---:|---:|---:|---|---|---|",
    ]
    naive = results[-1]
    for r in results:
        lines.append(
            f"| {r.name} | {r.events:,} | {r.rate:,.0f} | {r.rate / naive.rate:.2f}x | "
            f"{percentile(r.latency, 0.5):,.0f} / {percentile(r.latency, 0.99):,.0f} | "
            f"{percentile(r.paced, 0.5):,.0f} / {percentile(r.paced, 0.99):,.0f} | "
            f"{', '.join(map(str, r.exit_codes))} |"
        )
    two = results[1]
    notes = [
        "",
        f"- The model alone (preprocessing + estimator in this process, batches of 500): "
        f"{floor:,.0f} events/s; nbmlops with one consumer reaches {ours.rate / floor:.0%} of it "
        "while it also checks every record, logs every prediction to SQLite before it answers, "
        "and writes each answer once (a Lua script per batch).",
        f"- Two consumers: {two.rate / ours.rate:.2f}x one consumer's rate on "
        f"{os.cpu_count()} cores (the producer, redis-server and the consumers share them).",
        f"- Agreement: {agreement}",
        "",
        "Machine:",
        "",
        f"- date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- machine: {platform.platform()}, {os.cpu_count()} cores ({bench_package.cpu_model()})",
        f"- python: {platform.python_version()}; packages: "
        f"{bench_package.installed_versions(VERSIONS_OF)}",
        f"- redis-server: {args.redis_version}",
        f"- nbmlops commit: {bench_package.git_commit()}",
        f"- load average (1 min) at start / end: {args.load_start:.2f} / {os.getloadavg()[0]:.2f}",
        f"- events: `make_churn({args.events:,}, seed=9)` records as JSON; paced runs "
        f"{args.seconds:g} s at {args.rate:,.0f} events/s; nbmlops consumers with "
        "`--batch-size 500`",
        f"- whole benchmark: {(time.perf_counter() - args.started) / 60:.1f} min",
    ]
    return "\n".join(lines + notes) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20_000, help="events per saturation run")
    parser.add_argument("--rate", type=float, default=500.0, help="paced events/s (500)")
    parser.add_argument("--seconds", type=float, default=10.0, help="paced run seconds (10)")
    parser.add_argument("--no-readme", action="store_true", help="print only")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.started, args.load_start = time.perf_counter(), os.getloadavg()[0]
    import redis

    import nbmlops
    from nbmlops.datasets import make_churn

    tmp = Path(tempfile.mkdtemp(prefix="nbmlops-bench-stream-"))
    redis_proc = None
    try:
        settings = package_model(tmp / ".nbmlops")
        redis_proc, url = start_redis(tmp)
        args.redis_version = subprocess.run(
            ["redis-server", "--version"], capture_output=True, text=True
        ).stdout.split()[2]
        client = redis.Redis.from_url(url)
        frame = make_churn(args.events, seed=9).drop(columns="churned").reset_index(drop=True)
        records = json.loads(frame.to_json(orient="records"))
        payloads = [json.dumps(r) for r in records]
        loaded = nbmlops.load("churn", settings)
        expected = [str(p) for p in loaded.predict(frame)["prediction"].tolist()]
        predictor = loaded.predictor
        chunks = [frame.iloc[i : i + 500] for i in range(0, len(frame), 500)]
        start = time.perf_counter()
        for chunk in chunks:
            predictor.score(chunk)
        floor = len(frame) / (time.perf_counter() - start)

        env = {**os.environ, "NBMLOPS_HOME": str(settings.home), "OMP_NUM_THREADS": "1"}
        nbmlops_bin = str(Path(sys.executable).parent / "nbmlops")
        artifact = str(loaded.path)

        def ours(count: int):
            return lambda stream: [
                [nbmlops_bin, "stream", "churn@production", "--source", f"{url}?stream={stream}",
                 "--group", "bench", "--batch-size", "500", "--consumer", f"c{i}"]
                for i in range(count)
            ]  # fmt: skip

        def naive(stream: str) -> list[list[str]]:
            script = str(HERE / "_bench_stream_naive.py")
            return [[sys.executable, script, url, stream, "bench", artifact]]

        consuming = "nbmlops stream: consuming"
        results = []
        for name, argvs, ready in (
            ("nbmlops stream x1", ours(1), consuming),
            ("nbmlops stream x2", ours(2), consuming),
            ("hand-written (redis-py + mlflow.pyfunc)", naive, "ready"),
        ):
            print(f"bench_stream: {name}", file=sys.stderr, flush=True)
            results.append(run_set(name, argvs, env, ready, client, payloads, args))
        agreement = check(results, expected, len(payloads))
        section = render(results, floor, args, agreement)
    finally:
        if redis_proc is not None:
            os.killpg(redis_proc.pid, signal.SIGTERM)
            redis_proc.wait(timeout=30)
        shutil.rmtree(tmp, ignore_errors=True)
    print(section)
    if not args.no_readme:
        bench_package.write_section(section, START, END, SECTION_INTRO)
    return 0


def check(results: list[Result], expected: list[str], n: int) -> str:
    for r in results:
        if len(r.answers) != n:
            sys.exit(f"bench_stream: {r.name} answered {len(r.answers)} of {n} events")
    for r in results[:2]:
        ordered = [r.answers[k] for k in sorted(r.answers, key=_id_order)]
        if ordered != expected:
            sys.exit(f"bench_stream: {r.name}'s predictions differ from nbmlops.load's")
        if any(code != 0 for code in r.exit_codes):
            sys.exit(f"bench_stream: {r.name} exited {r.exit_codes} after SIGTERM")
    return (
        f"every run's sink holds exactly one entry per event ({n:,}); nbmlops' predictions "
        'equal `nbmlops.load("churn").predict` on the same records, event by event'
    )


def _id_order(entry_id: str) -> tuple[int, int]:
    millis_part, sequence = entry_id.split("-", 1)
    return int(millis_part), int(sequence)


if __name__ == "__main__":
    sys.exit(main())
