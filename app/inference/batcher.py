"""Cross-request batching: the sentences of concurrent scoring requests share forward passes, and
concurrent generations decode together, one step for all (`DecodeLoop`).

One `ScoreBatcher` per loaded model and precision (`Batchers.get`) runs a thread that takes waiting
work, packs it into one `score_sentences` call of at most `settings.score_batch_tokens` tokens, and
hands each request its own sentences' results. It never waits to fill a batch: when it is idle, a
request's sentences start at once; while it computes, new work queues and goes into the next batch,
as much as fits. A sentence's numbers are the same whatever it is batched with (`model.inference`
computes in whole tiles), so batching changes the speed, not the answer.

Fairness: work waits in one queue per key (the request's owner), and a batch takes one piece of
work from each key in turn; a request larger than a quarter of the budget is cut into pieces of
whole sentences. A key that sends many requests, or one huge one, cannot hold back another key's
single sentence for more than a batch or so.

Bounds: the waiting work is at most `settings.max_queue_tokens` tokens (past that, `Busy`: 503 with
`Retry-After`) and a request waits at most `settings.max_queue_seconds` (then `Busy`, its
unstarted work withdrawn). The thread ends after a while idle; the next request starts another.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import queue
import threading
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

import torch

from app.errors import Busy
from app.inference.registry import LoadedModel
from model.data import EOS
from model.inference import Continuations, GeneratedToken, SentenceScore, score_sentences, step_logits

log = logging.getLogger(__name__)

IDLE_SECONDS = 30.0  # a batcher's thread ends after this long without work


def _wait_for_work(condition: threading.Condition, has_work: Callable[[], bool]) -> bool:
    """Wait (holding `condition`) until there is work; False after `IDLE_SECONDS` without any."""
    deadline = time.monotonic() + IDLE_SECONDS
    while not has_work():
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        condition.wait(left)
    return True


@dataclass
class _Piece:
    """Consecutive sentences of one request, scored in one batch."""

    request: _Request
    start: int  # index of the first sentence in the request
    sentences: list[list[str]]  # tokens, with <eos> appended when the request scores it
    tokens: int


@dataclass
class _Request:
    owner: str
    count: int  # sentences
    results: list[SentenceScore | None]
    future: Future[list[SentenceScore]] = field(default_factory=Future)
    remaining: int = 0  # pieces not scored yet
    withdrawn: bool = False

    def done(self, start: int, scores: Sequence[SentenceScore]) -> None:
        self.results[start : start + len(scores)] = list(scores)
        self.remaining -= 1
        if self.remaining == 0 and not self.future.done():
            self.future.set_result([r for r in self.results if r is not None])


class ScoreBatcher:
    """Scores the work of every request for one model and precision, in shared batches."""

    def __init__(
        self, loaded: LoadedModel, precision: str, batch_tokens: int, max_queue_tokens: int, max_queue_seconds: float
    ) -> None:
        self.loaded, self.precision = loaded, precision
        self.batch_tokens, self.max_queue_tokens, self.max_queue_seconds = (
            batch_tokens,
            max_queue_tokens,
            max_queue_seconds,
        )
        self._queues: OrderedDict[str, deque[_Piece]] = OrderedDict()  # owner -> its pieces, in order
        self._queued_tokens = 0
        self._lock = threading.Condition()
        self._thread: threading.Thread | None = None
        self.batches = 0  # forward passes run (for tests and metrics)
        self.in_flight_tokens = 0  # tokens of the batch being computed

    @property
    def queued_tokens(self) -> int:
        return self._queued_tokens

    def score(self, owner: str, sentences: Sequence[Sequence[str]], score_eos: bool) -> list[SentenceScore]:
        """Score `sentences` (tokens) as `score_sentences` would, waiting for a batch: `Busy` when the
        queue is full or the wait passes `max_queue_seconds`."""
        future = self.submit(owner, sentences, score_eos)
        try:
            return future.result(timeout=self.max_queue_seconds)
        except TimeoutError:
            raise self._gave_up(future) from None

    async def score_async(self, owner: str, sentences: Sequence[Sequence[str]], score_eos: bool) -> list[SentenceScore]:
        """`score` for a caller on the event loop: it waits without holding a thread."""
        future = self.submit(owner, sentences, score_eos)
        try:
            async with asyncio.timeout(self.max_queue_seconds):  # lighter than anyio's cancel scope
                return await asyncio.wrap_future(future)
        except TimeoutError:
            raise self._gave_up(future) from None

    def _gave_up(self, future: Future[list[SentenceScore]]) -> Busy:
        """Withdraw a request that waited `max_queue_seconds`; the `Busy` to answer it with."""
        self.withdraw(future)
        return Busy(
            f"the server is busy: the scoring waited {self.max_queue_seconds:g} s for its turn; retry shortly",
            retry_after=max(1, int(self.max_queue_seconds / 10)),
        )

    def submit(self, owner: str, sentences: Sequence[Sequence[str]], score_eos: bool) -> Future[list[SentenceScore]]:
        """Queue a request's sentences; its future gets their scores in order."""
        with_eos = [[*s, EOS] if score_eos else list(s) for s in sentences]
        request = _Request(owner, len(with_eos), [None] * len(with_eos))
        pieces = self._cut(request, with_eos)
        tokens = sum(p.tokens for p in pieces)
        with self._lock:
            if self._queued_tokens and self._queued_tokens + tokens > self.max_queue_tokens:
                raise Busy(
                    f"the server is busy: {self._queued_tokens:,} tokens are waiting to be scored, at most "
                    f"{self.max_queue_tokens:,}; retry shortly"
                )
            if not pieces:  # nothing to score (empty sentences without <eos>)
                request.future.set_result([SentenceScore([], [], []) for _ in with_eos])
                return request.future
            request.remaining = len(pieces)
            self._queues.setdefault(owner, deque()).extend(pieces)
            self._queued_tokens += tokens
            self._start()
            self._lock.notify()
        return request.future

    def withdraw(self, future: Future[list[SentenceScore]]) -> None:
        """Take a request's pieces that have not started out of the queue (its caller gave up)."""
        with self._lock:
            for owner, queue in list(self._queues.items()):
                kept = deque(p for p in queue if p.request.future is not future)
                self._queued_tokens -= sum(p.tokens for p in queue) - sum(p.tokens for p in kept)
                if kept:
                    self._queues[owner] = kept
                else:
                    del self._queues[owner]

    def _cut(self, request: _Request, sentences: list[list[str]]) -> list[_Piece]:
        """The request's sentences in pieces of at most a quarter of the batch budget (whole sentences)."""
        limit = max(1, self.batch_tokens // 4)
        pieces: list[_Piece] = []
        start, tokens = 0, 0
        current: list[list[str]] = []
        for i, sentence in enumerate(sentences):
            if current and tokens + len(sentence) > limit:
                pieces.append(_Piece(request, start, current, tokens))
                start, current, tokens = i, [], 0
            current.append(sentence)
            tokens += len(sentence)
        if current and tokens:
            pieces.append(_Piece(request, start, current, tokens))
        elif current:  # only empty sentences left: they still need their (empty) scores
            pieces.append(_Piece(request, start, current, 0))
        return pieces

    def _start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name=f"score-batcher-{self.precision}", daemon=True)
            self._thread.start()

    def _take(self) -> list[_Piece]:
        """Pieces for one batch, one from each owner in turn, while they fit the budget (at least one)."""
        batch: list[_Piece] = []
        tokens = 0
        while self._queues:
            progressed = False
            for owner in list(self._queues):
                queue = self._queues[owner]
                piece = queue[0]
                if batch and tokens + piece.tokens > self.batch_tokens:
                    continue
                queue.popleft()
                if not queue:
                    del self._queues[owner]
                else:
                    self._queues.move_to_end(owner)  # the next batch starts with the owners after it
                batch.append(piece)
                tokens += piece.tokens
                progressed = True
            if not progressed or tokens >= self.batch_tokens:
                break
        self._queued_tokens -= tokens
        return batch

    def _run(self) -> None:
        while True:
            with self._lock:
                if not _wait_for_work(self._lock, lambda: bool(self._queues)):
                    self._thread = None
                    return
                batch = self._take()
                self.in_flight_tokens = sum(p.tokens for p in batch)
            try:
                self._compute(batch)
            finally:
                self.in_flight_tokens = 0

    def _compute(self, batch: list[_Piece]) -> None:
        live = [p for p in batch if not p.request.future.done()]
        sentences = list(itertools.chain.from_iterable(p.sentences for p in live))
        try:
            with self.loaded.lock:
                scores = score_sentences(
                    self.loaded.model, self.loaded.vocab, sentences, score_eos=False, precision=self.precision
                )
        except Exception as exc:  # every request of the batch gets the error
            log.exception("scoring batch failed")
            for piece in live:
                if not piece.request.future.done():
                    piece.request.future.set_exception(exc)
            return
        self.batches += 1
        offset = 0
        for piece in live:
            piece.request.done(piece.start, scores[offset : offset + len(piece.sentences)])
            offset += len(piece.sentences)


class Batchers:
    """The batcher of each loaded model and precision (a model evicted from the cache takes its
    batchers with it: they are kept on the `LoadedModel`)."""

    def __init__(self, batch_tokens: int, max_queue_tokens: int, max_queue_seconds: float) -> None:
        self.batch_tokens, self.max_queue_tokens, self.max_queue_seconds = (
            batch_tokens,
            max_queue_tokens,
            max_queue_seconds,
        )
        self._lock = threading.Lock()

    def get(self, loaded: LoadedModel, precision: str) -> ScoreBatcher:
        with self._lock:
            batcher = loaded.batchers.get(precision)
            if batcher is None:
                batcher = ScoreBatcher(
                    loaded, precision, self.batch_tokens, self.max_queue_tokens, self.max_queue_seconds
                )
                loaded.batchers[precision] = batcher
            return batcher


# --- generation: continuous batching ---


_ENDED = object()  # a continuation's last item for its reader


@dataclass
class _Running:
    continuations: Continuations
    inbox: queue.SimpleQueue[object] | asyncio.Queue[object]  # lists of events, then `_ENDED` or an error
    loop: asyncio.AbstractEventLoop | None = None  # the reader's event loop, when the reader is a coroutine
    abandoned: bool = False  # its reader went away (a closed stream)


def _put_all(items: list[tuple[asyncio.Queue[object], object]]) -> None:
    for inbox, item in items:
        inbox.put_nowait(item)


class DecodeLoop:
    """Continuous batching for one model and precision: every running generation (`Continuations`)
    advances by one token per step, and the steps of all of them read their chosen tokens in one
    batched `step_logits`. A generation joins between two steps and leaves when it ends; each keeps
    its own sampling generator, and every row's numbers are computed in the same fixed-shape tiles
    whatever else is batched, so a seeded sample is the same text alone or among other streams.

    A generation's reader is a thread (`run`) or a coroutine (`event_batches`). The step's events reach
    the coroutines of one event loop in one call, before the step is computed: the event loop
    formats and sends them while torch computes the next step, and no stream needs a thread.
    """

    def __init__(self, loaded: LoadedModel, precision: str) -> None:
        self.loaded, self.precision = loaded, precision
        self._running: list[_Running] = []
        self._lock = threading.Condition()
        self._thread: threading.Thread | None = None
        self.steps = 0  # batched steps run (for tests and metrics)

    def _join(self, running: _Running) -> None:
        with self._lock:
            self._running.append(running)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name=f"decode-{self.precision}", daemon=True)
                self._thread.start()
            self._lock.notify()

    def run(self, continuations: Continuations) -> Iterator[GeneratedToken | tuple[int, str]]:
        """The events of `continuations` as the loop produces them (its prompt already read)."""
        inbox: queue.SimpleQueue[object] = queue.SimpleQueue()
        running = _Running(continuations, inbox)
        self._join(running)
        try:
            while (item := inbox.get()) is not _ENDED:
                if isinstance(item, BaseException):
                    raise item
                yield from item  # type: ignore[misc]
        finally:
            running.abandoned = True

    async def event_batches(
        self, continuations: Continuations
    ) -> AsyncIterator[list[GeneratedToken | tuple[int, str]]]:
        """`run` for a reader on the event loop, without a thread: each item is every event that
        arrived since the reader last asked (one step's when it keeps up, several when it lags)."""
        inbox: asyncio.Queue[object] = asyncio.Queue()
        running = _Running(continuations, inbox, asyncio.get_running_loop())
        self._join(running)
        try:
            ended = False
            while not ended:
                items = [await inbox.get()]
                while not inbox.empty():
                    items.append(inbox.get_nowait())
                events: list[GeneratedToken | tuple[int, str]] = []
                error: BaseException | None = None
                for item in items:
                    if item is _ENDED or isinstance(item, BaseException):
                        ended, error = True, item if isinstance(item, BaseException) else None
                        break
                    events += item  # type: ignore[arg-type]
                if events:
                    yield events
                if error is not None:
                    raise error
        finally:
            running.abandoned = True

    def _loop(self) -> None:
        while True:
            with self._lock:
                if not _wait_for_work(self._lock, lambda: bool(self._running)):
                    self._thread = None
                    return
                batch = list(self._running)
            try:
                self._step(batch)
            except Exception as exc:  # every generation of the step gets the error
                log.exception("generation step failed")
                self._drop(batch, exc)

    def _drop(self, ended: list[_Running], error: BaseException | None = None) -> None:
        with self._lock:
            self._running = [r for r in self._running if r not in ended]
        _deliver([(running, error if error is not None else _ENDED) for running in ended])

    def _step(self, batch: list[_Running]) -> None:
        model = self.loaded.model
        going: list[tuple[_Running, torch.Tensor]] = []
        ended: list[_Running] = []
        with self.loaded.lock:
            outbox: list[tuple[_Running, object]] = []
            for running in batch:
                if running.abandoned:
                    ended.append(running)
                    continue
                events, choice = running.continuations.choose()
                if events:
                    outbox.append((running, events))
                if choice is None:
                    ended.append(running)
                else:
                    going.append((running, choice))
            _deliver(outbox)  # the readers format and send these while the step computes
            if going:
                ids = torch.cat([choice for _, choice in going])
                h = torch.cat([r.continuations.state[0] for r, _ in going], dim=1)
                c = torch.cat([r.continuations.state[1] for r, _ in going], dim=1)
                last, (h, c) = step_logits(model, ids, (h, c), self.precision)
                start = 0
                for running, choice in going:
                    end = start + choice.numel()
                    running.continuations.advance(last[start:end], (h[:, start:end], c[:, start:end]))
                    start = end
                self.steps += 1
        if ended:
            self._drop(ended)


def _deliver(items: list[tuple[_Running, object]]) -> None:
    """Hand each reader its item: a thread's at once, and all of one event loop's coroutines' in one call."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Queue[object], object]]] = {}
    for running, item in items:
        if running.loop is None:
            running.inbox.put_nowait(item)
        else:
            by_loop.setdefault(running.loop, []).append((running.inbox, item))  # type: ignore[arg-type]
    for loop, batch in by_loop.items():
        with contextlib.suppress(RuntimeError):  # its event loop closed (the server stopped): nobody reads these
            loop.call_soon_threadsafe(_put_all, batch)


def decode_loop(loaded: LoadedModel, precision: str) -> DecodeLoop:
    """The decode loop of a loaded model and precision (kept on the `LoadedModel`, made on first use)."""
    key = f"decode-{precision}"
    with _LOOPS_LOCK:
        loop = loaded.batchers.get(key)
        if loop is None:
            loop = loaded.batchers[key] = DecodeLoop(loaded, precision)
        return loop


_LOOPS_LOCK = threading.Lock()
