"""Group commit: concurrent single appends share one transaction.

Request threads hand their submission to `GroupCommitter.submit` and wait on the
returned future; one committer thread gathers whatever arrives within a few
milliseconds (or up to a few hundred events) and saves it in one transaction.
Clients that each wait for their answer before sending again come back together:
once a gathering has as many as the last one took and nothing more is queued, it
stops waiting (a lone client is not held for the window each time). It
validates each submission as it arrives and starts its signature check, so that
the wait for the rest of the batch is not wasted; one refused on its own is
answered at once and left out. A request is answered only after its transaction
has committed.
A batch request (`submit_batch`) is committed by the same thread, on its own: it
stays all or nothing, and one thread writing per process keeps concurrent batches
from contending for the interpreter while one of them holds its locks.
If the gathered singles are refused as a whole (a bad signature, say), the events
refused on their own are answered and the rest committed together again; only if
that is refused too are they tried one by one. Each request gets its own answer
and one bad event cannot fail another agency's, nor cost a transaction per event.
A request given up on before its turn (its client gone) is skipped: its future is
marked running when taken from the queue, so it can no longer be cancelled under
the committer.
A request awaited on an event loop (`submit_awaitable`, the HTTP fast path) is
answered through that loop, and a committed batch's answers are handed over to it
all at once: one wake-up of the loop for the batch, not one per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from .core import Ledger, Preparation, Receipt, Submission
from .errors import LedgerError, StoreUnavailable


@dataclass(slots=True)
class _Awaited:
    """A single's answer, for a requester awaiting it on `loop`: the committer's side
    of an asyncio future, with the calls the committer makes on a `Future`."""

    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Receipt]

    def set_running_or_notify_cancel(self) -> bool:
        # Cancelled only by its loop, which then no longer awaits it. One cancelled
        # after this was read is committed all the same, as a running Future is.
        return not self.future.cancelled()

    def set_result(self, receipt: Receipt) -> None:
        _hand_over(self.loop, [(self.future, receipt)])

    def set_exception(self, error: BaseException) -> None:
        _hand_over(self.loop, [(self.future, error)])


def _hand_over(
    loop: asyncio.AbstractEventLoop, answers: list[tuple[asyncio.Future[Receipt], Any]]
) -> None:
    with contextlib.suppress(RuntimeError):  # the loop is closed: nobody awaits them now
        loop.call_soon_threadsafe(_settle, answers)


def _settle(answers: list[tuple[asyncio.Future[Receipt], Any]]) -> None:
    """On the requesters' loop: each answer to its future, unless given up on."""
    for future, answer in answers:
        if future.cancelled():
            continue
        if isinstance(answer, BaseException):
            future.set_exception(answer)
        else:
            future.set_result(answer)


_Single = tuple[Submission, "Future[Receipt] | _Awaited"]


@dataclass
class _Batch:
    submissions: list[Submission]
    future: Future[list[Receipt]]


class GroupCommitter:
    def __init__(self, ledger: Ledger, max_batch: int = 500, window_s: float = 0.002) -> None:
        self.ledger = ledger
        self.max_batch = max_batch
        self.window_s = window_s
        # SimpleQueue: a put is one C call, with no condition to notify, for every
        # request.
        self._queue: queue.SimpleQueue[_Single | _Batch | None] = queue.SimpleQueue()
        self.batches = 0
        self.events = 0
        # How many singles the last gathering took: the next one stops waiting once it
        # has as many and no more are queued. The first waits out its window.
        self._expected = max_batch
        self._thread = threading.Thread(target=self._run, name="group-commit", daemon=True)
        self._thread.start()

    def submit(self, submission: Submission) -> Future[Receipt]:
        future: Future[Receipt] = Future()
        self._queue.put((submission, future))
        return future

    def submit_awaitable(self, submission: Submission) -> asyncio.Future[Receipt]:
        """As `submit`, for a caller on a running event loop: awaiting the result
        costs that loop no thread hand-over of its own."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Receipt] = loop.create_future()
        self._queue.put((submission, _Awaited(loop, future)))
        return future

    def submit_batch(self, submissions: Sequence[Submission]) -> Future[list[Receipt]]:
        """Commit these together, all or nothing, in their own transaction."""
        future: Future[list[Receipt]] = Future()
        self._queue.put(_Batch(list(submissions), future))
        return future

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=10)

    def _run(self) -> None:
        held: _Single | _Batch | None = None
        while True:
            first = held if held is not None else self._queue.get()
            held = None
            if first is None:
                return
            if isinstance(first, _Batch):
                self._commit_batch(first)
                continue
            prepared = Preparation(self.ledger, self.ledger.clock())
            batch: list[_Single] = []
            self._add(prepared, batch, first)
            taken = 1
            deadline = time.monotonic() + self.window_s
            while len(batch) < self.max_batch:
                if taken >= self._expected and self._queue.empty():
                    break  # as many as came together last time, and no more waiting
                remaining = deadline - time.monotonic()
                try:
                    item = (
                        self._queue.get(timeout=max(remaining, 0))
                        if remaining > 0
                        else self._queue.get_nowait()
                    )
                except queue.Empty:
                    break
                if item is None:
                    self._commit(batch, prepared)
                    return
                if isinstance(item, _Batch):  # after the singles gathered so far
                    held = item
                    break
                taken += 1
                self._add(prepared, batch, item)
            self._expected = taken
            self._commit(batch, prepared)

    @staticmethod
    def _add(prepared: Preparation, batch: list[_Single], single: _Single) -> None:
        submission, future = single
        if not future.set_running_or_notify_cancel():
            return  # given up on by its requester: nothing to answer
        try:
            prepared.add(submission)
        except Exception as e:  # refused on its own: answered now, left out
            future.set_exception(e)
        else:
            batch.append(single)

    def _commit_batch(self, batch: _Batch) -> None:
        if not batch.future.set_running_or_notify_cancel():
            return
        self.batches += 1
        self.events += len(batch.submissions)
        try:
            batch.future.set_result(self.ledger.append_many(batch.submissions))
        except BaseException as e:  # the request gets the refusal
            batch.future.set_exception(e)

    def _commit(
        self, batch: list[_Single], prepared: Preparation | None = None, screened: bool = False
    ) -> None:
        if not batch:  # every single refused on its own: no check was started
            return
        if not screened:
            self.batches += 1
            self.events += len(batch)
        try:
            receipts = (
                self.ledger.append_prepared(prepared)
                if prepared is not None
                else self.ledger.append_many([s for s, _ in batch])
            )
        except LedgerError as e:
            if isinstance(e, StoreUnavailable):
                for _, future in batch:
                    future.set_exception(e)
            elif not screened:  # answer what fails on its own; commit the rest together
                rest = []
                verdicts = (
                    prepared.refusals()  # their signatures were checked: not again
                    if prepared is not None and prepared.checks.collected
                    else self.ledger.screen([s for s, _ in batch])
                )
                for (submission, future), refusal in zip(batch, verdicts, strict=True):
                    if refusal is None:
                        rest.append((submission, future))
                    else:
                        future.set_exception(refusal)
                if rest:
                    self._commit(rest, screened=True)
            else:  # refused only in company (a conflict between them): one by one
                for submission, future in batch:
                    try:
                        future.set_result(self.ledger.append(submission))
                    except BaseException as each:  # each request gets its own answer
                        future.set_exception(each)
            return
        except BaseException as e:
            for _, future in batch:
                future.set_exception(e)
            return
        awaited: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Receipt], Any]]] = {}
        for (_, future), receipt in zip(batch, receipts, strict=True):
            if isinstance(future, _Awaited):
                awaited.setdefault(future.loop, []).append((future.future, receipt))
            else:
                future.set_result(receipt)
        for loop, answers in awaited.items():
            _hand_over(loop, answers)
