"""The micro-batcher on its own: who is scored together, when it waits, where the model runs."""

from __future__ import annotations

import asyncio
import threading
import time

from nbmlops.serving.batcher import BatchLoopFailure, MicroBatcher


class Recorder:
    """A score function that records each batch and answers every record with its batch size."""

    def __init__(self, seconds: float = 0.0) -> None:
        self.seconds = seconds
        self.batches: list[int] = []
        self.threads: list[str] = []

    def __call__(self, jobs):
        time.sleep(self.seconds)
        self.batches.append(len(jobs))
        self.threads.append(threading.current_thread().name)
        return [[len(jobs)] * len(job.records) for job in jobs]


async def closed_loop(batcher: MicroBatcher, callers: int, rounds: int) -> None:
    """``callers`` clients, each sending again as soon as it has its answer."""

    async def caller(index: int):
        for _ in range(rounds):
            await batcher.submit([{"x": 1}], {}, "/predict", time.perf_counter(), "r")
            await asyncio.sleep(0.0003 * index)  # clients take their own time to send again

    await asyncio.gather(*(caller(i) for i in range(callers)))


def closed_loop_batches(score: Recorder, callers: int, rounds: int, max_rows: int) -> list[int]:
    """The batch sizes ``score`` saw while ``callers`` clients sent ``rounds`` requests each."""

    async def scenario():
        batcher = MicroBatcher(score, max_rows=max_rows, max_wait=0.05)
        batcher.start()
        await closed_loop(batcher, callers, rounds)
        await batcher.stop()

    asyncio.run(scenario())
    return score.batches


def test_steady_concurrent_callers_share_one_model_call():
    score = Recorder(seconds=0.002)
    closed_loop_batches(score, callers=16, rounds=80, max_rows=1000)
    assert sum(score.batches) == 16 * 80
    # once the batcher has seen 16 callers under load, it scores them together
    in_full_batches = sum(b for b in score.batches if b == 16)
    assert in_full_batches >= 0.6 * 16 * 80, score.batches


def test_a_lone_caller_is_not_kept_waiting():
    score = Recorder()

    async def scenario():
        batcher = MicroBatcher(score, max_rows=1000, max_wait=5.0)
        batcher.start()
        started = time.perf_counter()
        for _ in range(5):
            await batcher.submit([{"x": 1}], {}, "/predict", time.perf_counter(), "r")
        elapsed = time.perf_counter() - started
        await batcher.stop()
        return elapsed

    # the bounded wait is 5 s; a caller alone never waits for company
    assert asyncio.run(scenario()) < 2.0
    assert score.batches == [1] * 5


def test_light_traffic_never_waits_for_company():
    # pairs and single callers, 30 ms apart: a pair shows two callers in flight, but arrivals
    # are far apart compared with the model's time, so a single caller is not kept waiting
    score = Recorder(seconds=0.002)

    async def scenario():
        batcher = MicroBatcher(score, max_rows=1000, max_wait=0.5)
        batcher.start()
        latencies = []

        async def call():
            started = time.perf_counter()
            await batcher.submit([{"x": 1}], {}, "/predict", started, "r")
            latencies.append(time.perf_counter() - started)

        for _ in range(6):
            await asyncio.gather(call(), call())
            await asyncio.sleep(0.03)
            await call()
            await asyncio.sleep(0.03)
        await batcher.stop()
        return latencies

    assert max(asyncio.run(scenario())) < 0.25


def test_batches_respect_the_row_limit():
    batches = closed_loop_batches(Recorder(seconds=0.001), callers=10, rounds=5, max_rows=4)
    assert max(batches) <= 4 and sum(batches) == 50


def test_slow_models_run_off_the_event_loop_and_quick_ones_on_it():
    quick, slow = Recorder(), Recorder(seconds=MicroBatcher.INLINE_SECONDS * 2)

    async def scenario(score):
        batcher = MicroBatcher(score, max_rows=1000, max_wait=0.01)
        batcher.start()
        for _ in range(4):
            await batcher.submit([{"x": 1}], {}, "/predict", time.perf_counter(), "r")
        await batcher.stop()

    asyncio.run(scenario(quick))
    asyncio.run(scenario(slow))
    main = threading.main_thread().name
    # the first batch always goes to the model thread; a quick model then runs on the loop
    assert quick.threads[0] != main and quick.threads[1:] == [main] * 3
    assert main not in slow.threads


def test_a_failing_batch_fails_its_callers_only():
    calls = []

    def score(jobs):
        calls.append(len(jobs))
        if len(calls) == 1:
            raise RuntimeError("boom")
        return [[0] * len(job.records) for job in jobs]

    async def scenario():
        batcher = MicroBatcher(score, max_rows=1000, max_wait=0.01)
        batcher.start()
        first = await asyncio.gather(
            batcher.submit([{"x": 1}], {}, "/predict", 0.0, "r"), return_exceptions=True
        )
        second = await batcher.submit([{"x": 1}], {}, "/predict", 0.0, "r")
        await batcher.stop()
        return first, second

    first, second = asyncio.run(scenario())
    assert isinstance(first[0], BatchLoopFailure) and second == [0]


def test_each_caller_gets_its_own_outcome_from_one_batch():
    def score(jobs):
        return [ValueError("mine") if job.records[0]["x"] < 0 else [1] for job in jobs]

    async def scenario():
        batcher = MicroBatcher(score, max_rows=1000, max_wait=0.01)
        batcher.start()
        outcomes = await asyncio.gather(
            *(batcher.submit([{"x": x}], {}, "/predict", 0.0, "r") for x in (1, -1, 1)),
            return_exceptions=True,
        )
        await batcher.stop()
        return outcomes

    good, bad, other = asyncio.run(scenario())
    assert good == other == [1] and isinstance(bad, ValueError)


def test_the_watchdog_restarts_a_batch_loop_that_died():
    calls = []

    def score(jobs):
        calls.append(len(jobs))
        return [] if len(calls) == 1 else [[0] * len(job.records) for job in jobs]  # 1st: a bug

    async def scenario():
        batcher = MicroBatcher(score, max_rows=1000, max_wait=0.01)
        batcher.start()
        first = await asyncio.wait_for(
            asyncio.gather(
                batcher.submit([{"x": 1}], {}, "/predict", 0.0, "r"), return_exceptions=True
            ),
            timeout=5,
        )
        down = batcher.healthy
        second = await asyncio.wait_for(batcher.submit([{"x": 1}], {}, "/predict", 0.0, "r"), 5)
        up = batcher.healthy
        await batcher.stop()
        return first, down, second, up, batcher.restarts

    first, down, second, up, restarts = asyncio.run(scenario())
    assert isinstance(first[0], BatchLoopFailure)  # the caller in the dead loop is answered
    assert not down and up and restarts == 1 and second == [0]
