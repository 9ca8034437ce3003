"""Synchronous data parallelism over MPI: ``mpiexec -n N cnntrain train CONFIG``.

The scheme of Horovod and ChainerMN: every process (rank) builds the same net from
the same seed and draws the same global batch of ``batch_size`` images, of which it
runs the rows ``shard.rows`` (``batch_size / N`` of them) through the net. After
backward, the gradients of all ranks are summed by one ``MPI_Allreduce`` over one
flat buffer and divided by N: the mean over the global batch, as one process would
compute it (up to the order of the float sums). Every rank then applies the same
solver update to the same weights, so the weights never drift apart.

The flat buffer also carries the BatchNorm running statistics (averaged, so every
rank keeps the same ones: the running mean is then exactly the global batch's, the
running variance the mean of the ranks' variances), the loss (the global mean is
displayed) and a stop flag (a Ctrl-C seen by any rank stops all at the same
iteration). BatchNorm *normalizes* each shard with that shard's own statistics.

mpi4py is imported only when a launcher started several processes, so a plain run
never loads MPI. A rank that fails calls ``MPI_Abort`` (see :func:`run_or_abort`),
and a watchdog aborts a rank left waiting in a collective for longer than
``CNNTRAIN_MPI_TIMEOUT`` seconds, so the job ends with an error instead of hanging.
"""
from __future__ import annotations

import os
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, NoReturn, Sequence

import numpy as np

from cnntrain.backend import array_module, to_host
from cnntrain.blob import Param, Statistic
from cnntrain.errors import CnnTrainError

#: Where launchers put the number of processes: MPICH/Intel MPI/Slurm (PMI), Open MPI.
SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE")
TIMEOUT_VARIABLE = "CNNTRAIN_MPI_TIMEOUT"
DEFAULT_TIMEOUT_S = 300.0
FOLLOWER_GRACE_S = 5.0
ABORT_DRAIN_S = 1.0
MPI_HINT = "pip install 'cnntrain[mpi]' (mpi4py and the MPICH wheel, which provides mpiexec)"


def launched_size() -> int:
    """How many processes the MPI launcher started (1 without a launcher)."""
    for name in SIZE_VARIABLES:
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return 1


@dataclass(frozen=True)
class Shard:
    """This process's part of every TRAIN batch: rank ``rank`` of ``size``."""

    rank: int
    size: int

    def rows(self, batch: int) -> slice:
        """The rows of a global batch of ``batch`` images this rank runs."""
        per = batch // self.size
        return slice(self.rank * per, (self.rank + 1) * per)

    def check(self, batch: int) -> None:
        """A ValueError saying why ``batch`` cannot be split evenly over the ranks."""
        if batch % self.size:
            raise ValueError(f"{batch} does not divide over {self.size} processes (mpiexec "
                             f"-n {self.size}): the global batch is split evenly, so use a "
                             f"multiple of {self.size}")


def _timeout_from_environment() -> float | None:
    text = os.environ.get(TIMEOUT_VARIABLE, "")
    if not text:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(text)
    except ValueError:
        raise CnnTrainError(f"{TIMEOUT_VARIABLE}={text!r} is not a number of seconds") from None
    return value if value > 0 else None


class Communicator:
    """The processes of one MPI run (``MPI.COMM_WORLD``) and the collectives training uses.

    Every blocking collective runs under a watchdog: a rank that waits longer than
    ``timeout`` seconds (None: forever) for the others says so and aborts the job.
    """

    def __init__(self, comm, timeout: float | None = DEFAULT_TIMEOUT_S):
        self.comm = comm
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self.shard = Shard(self.rank, self.size)
        self.timeout = timeout
        self._waiting: tuple[str, float] | None = None
        if timeout is not None:
            threading.Thread(target=self._watch, name="cnntrain-mpi-watchdog",
                             daemon=True).start()

    @classmethod
    def from_environment(cls) -> "Communicator | None":
        """The MPI world when a launcher started several processes, else None."""
        size = launched_size()
        if size <= 1:
            return None
        timeout = _timeout_from_environment()
        try:
            from mpi4py import MPI
        except ImportError:
            raise CnnTrainError(f"started as one of {size} MPI processes, but mpi4py is not "
                                f"installed: {MPI_HINT}") from None
        return cls(MPI.COMM_WORLD, timeout)

    def local_rank(self) -> int:
        """This process's number among the processes on its own machine (MPI's shared-
        memory split): which of the machine's GPUs ``--device gpu`` takes."""
        from mpi4py import MPI

        return self.comm.Split_type(MPI.COMM_TYPE_SHARED).Get_rank()

    @property
    def is_root(self) -> bool:
        """Rank 0 alone writes the run folder, logs, metrics and snapshots."""
        return self.rank == 0

    # --- collectives ---------------------------------------------------------------
    def sum_in_place(self, buffer: np.ndarray, what: str) -> None:
        """Replace ``buffer`` (contiguous) by its sum over all ranks."""
        from mpi4py import MPI

        with self._waiting_for(what):
            _wait_politely(self.comm.Iallreduce(MPI.IN_PLACE, buffer, op=MPI.SUM))

    def barrier(self, what: str, timeout: bool = True) -> None:
        """Wait for every rank; ``timeout=False``: however long the others take."""
        if not timeout:
            _wait_politely(self.comm.Ibarrier())
            return
        with self._waiting_for(what):
            _wait_politely(self.comm.Ibarrier())

    @contextmanager
    def root_first(self) -> Iterator[None]:
        """Rank 0 runs the block before the others do (it downloads or unpacks a dataset
        once, into a folder the others then only read). If it fails it aborts the job,
        which also ends the ranks waiting here, so this wait has no time limit."""
        if not self.is_root:
            self.barrier("", timeout=False)
        yield
        if self.is_root:
            self.barrier("", timeout=False)

    def abort(self, code: int) -> NoReturn:
        """End every rank of the job with exit code ``code`` (``MPI_Abort``)."""
        sys.stdout.flush()
        sys.stderr.flush()
        # MPI_Abort ends the launcher's output forwarding too: the error line just
        # flushed may still sit in its pipe, so give the launcher a moment to pass it on.
        time.sleep(ABORT_DRAIN_S)
        self.comm.Abort(code)
        os._exit(code)    # MPICH may return from MPI_Abort before the launcher ends us

    # --- the watchdog --------------------------------------------------------------
    @contextmanager
    def _waiting_for(self, what: str) -> Iterator[None]:
        self._waiting = (what, time.monotonic())
        try:
            yield
        finally:
            self._waiting = None

    def _watch(self) -> None:
        poll = min(1.0, self.timeout / 10)
        while True:
            time.sleep(poll)
            waiting = self._waiting
            if waiting is not None and time.monotonic() - waiting[1] > self.timeout:
                print(f"error: rank {self.rank} of {self.size}: no answer from the other "
                      f"processes for {self.timeout:g} s in {waiting[0]} (a process died or "
                      f"hangs; {TIMEOUT_VARIABLE} sets this limit); aborting the run",
                      file=sys.stderr)
                self.abort(1)


# How long a rank waiting for the others polls without pause, then its longest nap.
SPIN_S, NAP_S = 0.002, 0.0005


def _wait_politely(request) -> None:
    """Wait for a non-blocking MPI request without holding a core. MPICH's blocking
    calls poll at full speed; where ranks share cores with each other (or with other
    work), the rank that finished its shard first would take cycles from the one still
    computing. Naps of at most half a millisecond add that much to a step at worst."""
    start = time.monotonic()
    nap = 0.00005
    while not request.Test():
        if time.monotonic() - start > SPIN_S:
            time.sleep(nap)
            nap = min(2 * nap, NAP_S)


def run_or_abort(comm: Communicator, fn, *args, **kwargs):
    """``fn(*args)`` on one rank of an MPI run: the CLI's ``run_or_exit``, except that
    any way out but success ends every rank with ``MPI_Abort`` (the others may be
    waiting for this one in a collective). Rank 0 prints its error at once. Most
    errors (a divergence, a stop) reach every rank together, so another rank first
    waits ``FOLLOWER_GRACE_S`` for rank 0 to say it and end the job; only an error of
    its own (its data missing on its machine, say) is then printed, naming the rank."""
    try:
        return fn(*args, **kwargs)
    except CnnTrainError as err:
        code, line = err.exit_code, str(err)
    except SystemExit as exc:
        if not exc.code:
            raise
        code, line = (exc.code if isinstance(exc.code, int) else 1), ""
    except BaseException as exc:     # a bug, or Ctrl-C twice
        code, line = 1, f"{type(exc).__name__}: {exc}"
    if not comm.is_root:
        time.sleep(FOLLOWER_GRACE_S)
    if line:
        where = "" if comm.is_root else f"rank {comm.rank} of {comm.size}: "
        print(f"error: {where}{line}", file=sys.stderr)
    comm.abort(code)


class GradientAllreduce:
    """Sums the gradients, BatchNorm statistics, loss and stop flag of all ranks in one
    flat buffer per step and leaves the global means in place."""

    def __init__(self, comm: Communicator, params: Sequence[Param]):
        self.comm = comm
        # Learned parameters send their gradients; running statistics their values.
        self.learned = [p for p in params if not isinstance(p, Statistic)]
        self.statistics = [p for p in params if isinstance(p, Statistic)]
        dtype = np.result_type(*(p.data.dtype for p in params)) if params else np.float32
        count = sum(p.data.size for p in params)
        self.buffer = np.empty(count + 2, dtype)    # + the loss and the stop flag

    def __call__(self, loss: float, stop: bool, iteration: int) -> tuple[float, bool]:
        """Average this step over the ranks; returns (mean loss, any rank asked to stop)."""
        buf = self.buffer
        arrays = [p.diff for p in self.learned] + [p.data for p in self.statistics]
        count = buf.size - 2                        # the parameters' part of the buffer
        xp = array_module(*arrays)
        if xp is np:
            offset = 0
            for array in arrays:
                buf[offset:offset + array.size] = array.reshape(-1)
                offset += array.size
        elif arrays:
            # On a GPU: one copy to the host and one back per step, for MPI's buffer.
            buf[:count] = to_host(xp.concatenate([a.reshape(-1) for a in arrays]))
        buf[count:] = (loss, float(stop))
        self.comm.sum_in_place(buf, f"the gradient allreduce of iteration {iteration + 1}")
        buf[:count + 1] *= buf.dtype.type(1.0 / self.comm.size)
        source = buf if xp is np else xp.asarray(buf[:count])
        offset = 0
        for array in arrays:
            array[...] = source[offset:offset + array.size].reshape(array.shape)
            offset += array.size
        return float(buf[count]), bool(buf[count + 1] > 0)


class FollowerRunDir:
    """The run folder as ranks other than 0 see it: the same paths, nothing written."""

    def __init__(self, run):
        self._run = run
        self.path, self.snapshots = run.path, run.snapshots

    def start(self, config_text: str, resume_iter: int | None) -> None:
        pass

    def log(self, line: str) -> None:
        pass

    def metric(self, **row) -> None:
        pass

    def snapshot_path(self, iteration: int):
        return self._run.snapshot_path(iteration)

    def prune_snapshots(self, keep: int) -> list:
        return []

    def __getattr__(self, name):     # read-only helpers (test accuracies, file lists)
        return getattr(self._run, name)
