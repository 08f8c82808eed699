"""The micro-batcher: concurrent requests scored together, each caller answered on its own."""

from __future__ import annotations

import asyncio
import collections
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from nbmlops.errors import LogError
from nbmlops.serving.responses import logger


@dataclass
class Job:
    records: list[dict]
    columns: dict[str, list]  # the records' values, each converted on its own
    endpoint: str
    started: float
    request_id: str
    future: asyncio.Future
    links: list | None = None  # a shadow's: the primary's prediction id of each record


class MicroBatcher:
    """Scores concurrent requests together: while one batch is in the model, the next forms.

    A lone caller is scored at once, and requests already received join it. Under load
    (requests arriving, on average, closer together than a model call takes) and with more
    callers recently in flight than have queued, the batch waits for the missing ones, at most
    ``max_wait`` seconds: the callers answered by the previous batch are about to send again,
    and one model call for all of them costs about what a call for one costs. Light traffic
    never waits: there, batching would save nothing.

    A quick model is called on the event loop itself: handing a batch to a thread and back
    costs about 1 ms, a fifth of a small scikit-learn pipeline's time, and the GIL lets the
    loop do little meanwhile. After a batch that took longer than ``INLINE_SECONDS`` (and for
    the first one), batches go to the model thread, so that ``/health`` and ``/metrics`` stay
    responsive during them.
    """

    #: How many recent batches the estimate of concurrent callers remembers.
    MEMORY = 8
    #: Weight of the newest batch in the running mean of the model's time per batch.
    SMOOTHING = 0.1
    #: Arrivals over this many seconds give the traffic's rate.
    HORIZON = 0.25
    #: Turns of the event loop a batch gives requests already received before it is closed.
    SETTLE_PASSES = 8
    #: Batches of a model faster than this run on the event loop.
    INLINE_SECONDS = 0.02

    def __init__(self, score, max_rows: int, max_wait: float, inline: bool = True) -> None:
        """``inline=False`` always scores in the thread (a shadow's: however quick it usually
        is, a slow batch of it must never hold up the event loop that answers callers)."""
        self._score = score
        self._may_inline = inline
        self._max_rows = max_rows
        self._max_wait = max_wait
        self._queue: collections.deque[Job] = collections.deque()
        self._arrived = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nbmlops-model")
        self._task: asyncio.Task | None = None
        self._active = 0
        self._peak = 0
        self._peaks: collections.deque[int] = collections.deque([1], maxlen=self.MEMORY)
        self._inline = False  # the first batch (imports, caches) is often slow
        self._arrivals: collections.deque[float] = collections.deque()
        self._model_seconds = math.nan  # running mean of a batch's time in the model
        self._current: list[Job] = []  # the batch being scored
        self._healthy = True
        self.restarts = 0

    #: Seconds the watchdog waits before restarting a batch loop that died.
    RESTART_SECONDS = 0.5

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._supervise())

    @property
    def healthy(self) -> bool:
        """False while the batch loop is down (between a failure and its restart)."""
        return self._healthy

    async def drain(self, timeout: float) -> None:
        """Stop once every request submitted has its answer (or after ``timeout`` seconds):
        how a version that no longer answers is retired."""
        deadline = asyncio.get_running_loop().time() + timeout
        while (self._queue or self._active) and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)
        await self.stop()

    async def stop(self) -> None:
        if self._task is not None:
            while self._queue:
                await asyncio.sleep(0.01)
            self._task.cancel()
        self._executor.shutdown(wait=True)

    async def submit(
        self,
        records: list[dict],
        columns: dict,
        endpoint: str,
        started: float,
        request_id: str,
        links: list | None = None,
    ):
        """The answers for one request, or the exception that its scoring raised."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._arrivals.append(loop.time())
        self._active += 1
        self._peak = max(self._peak, self._active)
        self._queue.append(Job(records, columns, endpoint, started, request_id, future, links))
        self._arrived.set()
        try:
            return await future
        finally:
            self._active -= 1

    async def _supervise(self) -> None:
        """The watchdog: run the batch loop, and restart it if it ever dies."""
        while True:
            try:
                await self._run()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a bug must not stop the service for good
                self._healthy = False
                self.restarts += 1
                logger.exception("the batch loop failed; restarting it")
                for job in self._current:
                    if not job.future.done():
                        job.future.set_exception(BatchLoopFailure(str(exc)))
                await asyncio.sleep(self.RESTART_SECONDS)
                self._healthy = True

    async def _next_arrival(self, timeout: float) -> bool:
        """Wait until a job is queued; False after ``timeout`` seconds without one."""
        self._arrived.clear()
        try:
            await asyncio.wait_for(self._arrived.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def _gather(self) -> list[Job]:
        """The next batch: what has queued, and the callers expected shortly (bounded wait)."""
        loop = asyncio.get_running_loop()
        while not self._queue:
            await self._next_arrival(None)
        # Requests already read from their sockets are a few steps from the queue: let them
        # arrive (a pass costs microseconds when there is nothing to do).
        for _ in range(self.SETTLE_PASSES):
            await asyncio.sleep(0)
        expected = max(self._peaks) if self._busy(loop.time()) else 1
        deadline = loop.time() + self._max_wait
        jobs, rows = [], 0
        while rows < self._max_rows:
            if self._queue:
                job = self._queue.popleft()
                jobs.append(job)
                rows += len(job.records)
                continue
            if len(jobs) >= expected:
                break
            left = deadline - loop.time()
            if left <= 0 or not await self._next_arrival(left):
                # fewer callers than lately: expect what came until more are seen again
                self._peaks.clear()
                self._peak = len(jobs)
                break
        self._peaks.append(self._peak)
        self._peak = self._active
        return jobs

    def _busy(self, now: float) -> bool:
        """Whether requests arrive, on average, closer together than a model call takes."""
        while self._arrivals and self._arrivals[0] < now - self.HORIZON:
            self._arrivals.popleft()
        return len(self._arrivals) * self._model_seconds > self.HORIZON

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = self._current = await self._gather()
            started = time.perf_counter()
            try:
                if self._inline:
                    results = self._score(jobs)
                else:
                    results = await loop.run_in_executor(self._executor, self._score, jobs)
            except Exception as exc:  # noqa: BLE001 - every waiting request gets the failure
                if not isinstance(exc, LogError):  # the log's outage is the answer itself
                    logger.exception("scoring a batch failed")
                    exc = BatchLoopFailure(str(exc))
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(exc)
                continue
            finally:
                seconds = time.perf_counter() - started
                self._inline = self._may_inline and seconds < self.INLINE_SECONDS
                mean = self._model_seconds
                self._model_seconds = (
                    seconds if math.isnan(mean) else mean + self.SMOOTHING * (seconds - mean)
                )
            for job, result in zip(jobs, results, strict=True):
                if job.future.done():
                    continue
                if isinstance(result, Exception):
                    job.future.set_exception(result)
                else:
                    job.future.set_result(result)
            self._current = []


class BatchLoopFailure(Exception):
    """The batch loop failed while this request was in it (the watchdog restarts the loop)."""
