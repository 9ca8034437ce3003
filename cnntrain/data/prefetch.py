"""Cut the next TRAIN batch in a background thread, without changing a single number.

A batch is a pure function of the sampler's position (order, cursor, epoch) and of
the states of two random streams (shuffling and augmentation). The background job
works on *copies* of both, started from the states the previous batch left; the
layer's own sampler and streams are only moved, to exactly the states that job
ended in, when the batch is taken. So at any moment between iterations (when the
trainer snapshots) they hold what they would hold without prefetching, and the
snapshot is the same.

Before a prefetched batch is used, the states it started from are compared with
the live ones. Anything that moved them in between (a resume loading a snapshot's
states, a rewind, another layer drawing from a shared stream) makes the batch
stale: it is dropped and the batch is cut again in the calling thread. Prefetching
therefore never changes which batches a run sees; it only overlaps their cutting
with the forward and backward passes.
"""
from __future__ import annotations

import copy
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from cnntrain.data.batches import BatchSampler

_executor: ThreadPoolExecutor | None = None
_lock = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    """One worker thread for the whole process (batches are small; the BLAS needs the cores)."""
    global _executor
    with _lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cnntrain-prefetch")
        return _executor


@dataclass(frozen=True)
class _State:
    """Where the sampler and the two streams stand."""

    order: np.ndarray
    cursor: int
    epoch: int
    shuffle: dict
    augment: dict

    def same_as(self, other: "_State") -> bool:
        # The sampler replaces (never edits) its order array, so identity is enough.
        return (self.order is other.order and self.cursor == other.cursor
                and self.epoch == other.epoch and self.shuffle == other.shuffle
                and self.augment == other.augment)


def _generator(state: dict) -> np.random.Generator:
    bit_generator = getattr(np.random, state["bit_generator"])(0)
    bit_generator.state = state
    return np.random.Generator(bit_generator)


@dataclass
class _Done:
    value: Any
    after: _State


class Prefetcher:
    """``next()`` returns ``produce(sampler, augment_rng)`` exactly as a direct call on the
    live sampler and stream would, and leaves them in the same states."""

    def __init__(self, sampler: BatchSampler, augment: np.random.Generator,
                 produce: Callable[[BatchSampler, np.random.Generator], Any]):
        self.sampler, self.augment, self.produce = sampler, augment, produce
        self._template = copy.copy(sampler)   # copied here: the worker never reads live objects
        self._job: tuple[_State, Future] | None = None
        self.used = self.dropped = 0   # prefetched batches taken / found stale (for tests)

    def _live(self) -> _State:
        s = self.sampler
        return _State(s.order, s.cursor, s.epoch, s.rng.bit_generator.state,
                      self.augment.bit_generator.state)

    def _run(self, start: _State) -> _Done:
        """Cut one batch on copies of the sampler and streams positioned at ``start``."""
        sampler = copy.copy(self._template)
        sampler.rng = _generator(start.shuffle)
        sampler.order, sampler.cursor, sampler.epoch = start.order, start.cursor, start.epoch
        augment = _generator(start.augment)
        value = self.produce(sampler, augment)
        return _Done(value, _State(sampler.order, sampler.cursor, sampler.epoch,
                                   sampler.rng.bit_generator.state,
                                   augment.bit_generator.state))

    def next(self) -> Any:
        start = self._live()
        done = None
        job, self._job = self._job, None
        if job is not None:
            if job[0].same_as(start):
                try:
                    done = job[1].result()
                    self.used += 1
                except Exception:  # noqa: BLE001 - cut it again here, where errors surface
                    done = None
            else:
                self.dropped += 1
        if done is None:
            done = self._run(start)
        s, after = self.sampler, done.after
        s.order, s.cursor, s.epoch = after.order, after.cursor, after.epoch
        s.rng.bit_generator.state = after.shuffle
        self.augment.bit_generator.state = after.augment
        self._job = (after, _pool().submit(self._run, after))
        return done.value

    def cancel(self) -> None:
        """Forget the batch in flight (the next ``next()`` cuts one in this thread)."""
        if self._job is not None:
            self._job[1].cancel()
            self._job = None
