"""The training loop: forward/backward/update, tests, snapshots, logs, resume."""
from __future__ import annotations

import math
import signal
import time
from collections import deque
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from cnntrain.backend import CPU, Device
from cnntrain.callbacks import Callback, EarlyStop
from cnntrain.config.specs import ExperimentSpec
from cnntrain.distributed import Communicator, FollowerRunDir, GradientAllreduce, Shard
from cnntrain.errors import SnapshotError, TrainingError
from cnntrain.evaluate import Evaluation, evaluate
from cnntrain.layers import BuildContext
from cnntrain.net import Net, build_nets
from cnntrain.rng import RngStreams
from cnntrain.rundir import RunDir
from cnntrain.snapshot import Snapshot, copy_weights, load_snapshot, save_snapshot
from cnntrain.solvers import make_solver


def build_for(exp: ExperimentSpec, data_dir: str | None, notify: Callable[[str], None],
              dtype=np.float32, shard: Shard | None = None,
              device: Device = CPU) -> tuple[Net, Net, RngStreams]:
    """The TRAIN and TEST nets of an experiment and the random streams they draw from
    (``shard``: this MPI process's rows of each TRAIN batch; ``device``: where they
    compute)."""
    rngs = RngStreams(exp.solver.random_seed)
    ctx = BuildContext(rngs=rngs, dtype=dtype, data_dir=None if data_dir is None else Path(data_dir),
                       notify=notify, shard=shard, device=device)
    train, test = build_nets(exp.net, ctx)
    return train, test, rngs


class _StopRequest:
    """SIGINT/SIGTERM set a flag; the loop finishes its iteration, snapshots and stops."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._old: dict[int, object] = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def _handle(self, signum, frame) -> None:
        if self.signal is not None:  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.signal = signum

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


class Trainer:
    """Trains one experiment into ``runs_root/<name>/``.

    With ``comm`` (several MPI processes, see ``cnntrain.distributed``) each process
    runs its shard of every batch and the gradients are averaged over all of them;
    rank 0 alone writes the run folder."""

    def __init__(self, exp: ExperimentSpec, *, runs_root: Path, data_dir: str | None = None,
                 notify: Callable[[str], None] = print, progress: bool = True,
                 callbacks: Sequence[Callback] = (), comm: Communicator | None = None,
                 resume_flags: Sequence[str] = (), device: Device = CPU):
        self.exp, self.s = exp, exp.solver
        self.runs_root, self.data_dir = Path(runs_root), data_dir
        # Flags of the command line that shape the run (--plot, --report, ...): the
        # printed resume command repeats them.
        self.resume_flags = list(resume_flags)
        self.notify, self.progress = notify, progress
        # Called at each metrics row and test (curves, report, TensorBoard, early stop).
        self.callbacks = list(callbacks)
        if self.s.early_stop is not None:
            self.callbacks.append(EarlyStop.from_config(self.s.early_stop))
        self.stop_reason: str | None = None
        self.interrupted = False      # stopped by SIGINT/SIGTERM (resumable as it was)
        self.comm = comm
        self._stop_request: _StopRequest | None = None
        self.device = device
        if comm is None:
            self.train_net, self.test_net, self.rngs = build_for(exp, data_dir, notify,
                                                                 device=self.device)
        else:
            with comm.root_first():    # rank 0 fetches a missing dataset once
                self.train_net, self.test_net, self.rngs = build_for(
                    exp, data_dir, notify, shard=comm.shard, device=self.device)
        for name in self.train_net.init_from_data():
            notify(f"layer '{name}': weights filled from the training images (whitening)")
        self.solver = make_solver(self.s.values, self.train_net.params)
        self.freeze_points = self.train_net.freeze_points()
        self.run = RunDir(runs_root, exp.name)
        self.allreduce: GradientAllreduce | None = None
        if comm is not None:
            self.allreduce = GradientAllreduce(comm, self.train_net.params)
            if not comm.is_root:
                self.run = FollowerRunDir(self.run)
        self.has_test = bool(self.test_net.data_layers()) and self.s.test_interval > 0
        self.last_snapshot: Path | None = None
        # Training seconds of the pieces before a resume: metrics.csv's ``seconds``
        # counts on from them, so wall-time curves do not jump back.
        self.seconds_before = 0.0
        self._start = time.perf_counter()

    # --- starting points -----------------------------------------------------------
    def resume(self, path: str | Path) -> None:
        snap = load_snapshot(path)
        # A snapshot without a data position (``import-prototxt --weights`` writes such
        # files) cannot continue a run: only its weights can start one.
        if not snap.resumable or (not snap.data_state and self.train_net.data_layers()):
            raise SnapshotError(f"{path}: this snapshot has weights only; use --weights "
                                "to start from them")
        if snap.iteration > self.s.max_iter:
            raise SnapshotError(f"{path} is at iteration {snap.iteration}, past the config's "
                                f"max_iter {self.s.max_iter}: nothing left to train")
        if snap.solver_type != self.solver.type_name:
            raise SnapshotError(f"{path} was made by the {snap.solver_type} solver but the config "
                                f"uses {self.solver.type_name}; pass --weights to start over "
                                "from its weights")
        copy_weights(self.train_net, snap, strict=True)
        # After the checks that name a mismatch precisely (solver, net): any other change.
        self._check_same_run(snap)
        history = [snap.history.get((layer, i)) for layer, i, _ in self.train_net.param_keys]
        if any(h is None for h in history):
            raise SnapshotError(f"{path} lacks solver history for some parameters")
        if not all(np.all(np.isfinite(buf)) for bufs in history for buf in bufs):
            raise SnapshotError(f"{path}: the solver history holds NaN or inf")
        try:
            self.solver.load_state(history, snap.iteration)
            self.rngs.set_state(snap.rng)
        except ValueError as err:
            raise SnapshotError(f"{path}: {err}") from None
        for layer in self.train_net.data_layers():
            state = snap.data_state.get(layer.name)
            if state is None:
                raise SnapshotError(f"{path} has no data position for layer '{layer.name}'")
            try:
                layer.load_extra_state(state)
            except ValueError as err:
                raise SnapshotError(f"{path}: layer '{layer.name}': {err}") from None
        for callback in self.callbacks:
            if callback.state_key is None:
                continue
            state = snap.callbacks.get(callback.state_key)
            if state is None:
                self.notify(f"note: {path} holds no {callback.state_key.replace('_', ' ')} "
                            "state; it starts afresh here")
                continue
            try:
                callback.load_state(state)
            except ValueError as err:
                raise SnapshotError(f"{path}: {err}") from None
        self.seconds_before = snap.seconds if snap.seconds is not None else \
            self.run.seconds_until(snap.iteration)
        self.last_snapshot = Path(path)

    def _check_same_run(self, snap: Snapshot) -> None:
        """A resume goes on with the config the snapshot was made with: only the fields
        of ``RESUME_MAY_CHANGE`` (how long, how often to test and snapshot) may differ."""
        from cnntrain.config.compare import RESUME_MAY_CHANGE, resume_differences
        from cnntrain.snapshot import stored_experiment

        changed = resume_differences(stored_experiment(snap), self.exp)
        if changed:
            shown = ", ".join(changed[:6]) + (f" and {len(changed) - 6} more"
                                              if len(changed) > 6 else "")
            raise SnapshotError(
                f"{snap.path} was made with another config: {shown} changed. A resume "
                f"may change only solver.{{{','.join(RESUME_MAY_CHANGE)}}}, the name and "
                "logging; start a new run from its weights with --weights instead")
    def resume_command(self, snapshot: Path) -> str:
        """The shell command that continues this run from ``snapshot`` exactly: the
        snapshot holds the config as trained (``--set`` overrides included), so only
        where the run and the data live are repeated."""
        import shlex

        words = ["cnntrain", "train", "--resume", str(snapshot)]
        if self.runs_root != Path("runs"):
            words += ["--runs-dir", str(self.runs_root)]
        if self.data_dir is not None:
            words += ["--data-dir", str(self.data_dir)]
        return shlex.join(words + self.resume_flags)

    def load_weights(self, path: str | Path) -> list[str]:
        copied = copy_weights(self.train_net, load_snapshot(path), strict=False)
        if not copied:
            raise SnapshotError(f"{path} has no weights for any layer of this net (names differ)")
        return copied

    # --- the loop ------------------------------------------------------------------
    def train(self, resumed: bool = False) -> Evaluation | None:
        try:
            return self._train(resumed)
        finally:
            self.run.release()
            for callback in self.callbacks:
                callback.close()

    def _train(self, resumed: bool) -> Evaluation | None:
        s, net, solver = self.s, self.train_net, self.solver
        self.run.start(self.exp.text, solver.iter if resumed else None)
        self.run.log(f"{'resuming at iteration ' + str(solver.iter) if resumed else 'starting'} "
                     f"{self.exp.name} ({self.exp.file})")
        for callback in self.callbacks:
            callback.on_train_start(self)
        start_time = self._start = time.perf_counter() - self.seconds_before
        losses = deque(maxlen=s.average_loss)
        last_eval = None
        bar = self._bar(solver.iter)
        # Non-finite values are detected and reported by name below; numpy's own
        # overflow warnings would only add noise before that one-line error.
        with _StopRequest() as stop, np.errstate(over="ignore", invalid="ignore"):
            self._stop_request = stop
            if self.has_test and solver.iter == 0 and s.test_initialization:
                last_eval = self._test(bar, start_time)
            while solver.iter < s.max_iter:
                loss = self._accumulate_gradients(s.iter_size)
                lr = solver.apply_update(s.iter_size)
                losses.append(loss)
                it = solver.iter
                smooth = float(np.mean(losses))
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{smooth:.4f}", lr=f"{lr:.3g}", refresh=False)
                if s.display and it % s.display == 0:
                    self._display(bar, it, smooth, lr, start_time)
                if self.has_test and it % s.test_interval == 0 and it < s.max_iter:
                    last_eval = self._test(bar, start_time)
                if s.snapshot and it % s.snapshot == 0 and it < s.max_iter:
                    self._snapshot()
                if self.stop_reason is not None:
                    break
                if stop.signal is not None:
                    path = self._snapshot()
                    self.interrupted = True
                    self._close(bar)
                    msg = (f"stopped by signal {stop.signal} at iteration {it}; resume with: "
                           f"{self.resume_command(path)}")
                    self.run.log(msg)
                    raise TrainingError(msg)
            if self.stop_reason is not None:
                # Just tested; the final snapshot holds the weights it stopped with.
                self._say(bar, self.stop_reason)
                if self.last_snapshot != self.run.snapshot_path(solver.iter):
                    self._snapshot()
            else:
                # Test before the final snapshot, so snapshot_keep knows its accuracy.
                if self.has_test:
                    last_eval = self._test(bar, start_time)
                if s.snapshot_after_train:
                    self._snapshot()
        self._close(bar)
        self.run.log(f"finished at iteration {solver.iter} in {time.perf_counter() - start_time:.1f} s")
        return last_eval

    def _accumulate_gradients(self, passes: int) -> float:
        """Forward/backward ``passes`` batches into the diffs (Caffe's iter_size);
        returns their mean loss."""
        net = self.train_net
        it = self.solver.iter
        if it != net.planned_at and any(net.planned_at < f <= it for f in self.freeze_points):
            net.plan_backward(it)    # a parameter froze: skip what only it needed
        net.clear_param_diffs()
        total = 0.0
        for _ in range(passes):
            loss = net.forward()
            if not math.isfinite(loss):
                self._diverged(f"the loss is {loss}", self._first_bad_blob())
            net.backward()
            total += loss
        if self.allreduce is not None:
            stop = self._stop_request
            total, stop_all = self.allreduce(total, stop is not None and stop.signal is not None,
                                             it)
            if stop_all and stop is not None and stop.signal is None:
                stop.signal = signal.SIGTERM    # another rank was asked to stop: stop together
        bad = self._first_bad_gradient()
        if bad:
            self._diverged("a gradient is not finite", bad)
        return total / passes

    def _bar(self, initial: int):
        if not self.progress:
            return None
        from cnntrain.progress import progress_bar

        return progress_bar(self.s.max_iter, self.exp.name, "it", initial)

    def _close(self, bar) -> None:
        if bar is not None:
            bar.close()

    def _say(self, bar, line: str) -> None:
        self.run.log(line)
        if bar is not None:
            bar.write(line)
        else:
            self.notify(line)

    def _display(self, bar, it: int, loss: float, lr: float, start: float) -> None:
        self._say(bar, f"iter {it}: loss = {loss:.4f}, lr = {lr:.6g}")
        self._metric(iter=it, loss=loss, lr=lr, seconds=round(time.perf_counter() - start, 2))

    def _metric(self, **row) -> None:
        self.run.metric(**row)
        for callback in self.callbacks:
            callback.on_metrics(row)

    def _test(self, bar, start: float) -> Evaluation:
        progress = None
        if self.progress:
            from cnntrain.progress import progress_bar

            def progress(batches: int):
                return progress_bar(batches, f"test at iteration {self.solver.iter}", "batch",
                                    nested=bar is not None)
        ev = evaluate(self.test_net, self.s.test_iter, comm=self.comm, progress=progress)
        it = self.solver.iter
        parts = ", ".join(f"{k} = {v:.4f}" for k, v in ev.outputs.items())
        self._say(bar, f"iter {it}: test on {ev.images} images: {parts}")
        self._metric(iter=it, test_loss=ev.loss, test_accuracy=ev.accuracy,
                     seconds=round(time.perf_counter() - start, 2))
        for callback in self.callbacks:
            reason = callback.on_test(self, ev)
            # A stop asked for at max_iter is no early stop: training ends there anyway.
            if reason and self.stop_reason is None and it < self.s.max_iter:
                self.stop_reason = reason
        return ev

    def _snapshot(self) -> Path:
        # An update can overflow the weights after a finite loss and gradient; such a
        # state is never written (the next forward would report it, one snapshot late).
        bad = self._first_bad_weight()
        if bad:
            self._diverged("a weight is not finite after the update", bad)
        path = self.run.snapshot_path(self.solver.iter)
        if self.comm is not None and not self.comm.is_root:
            self.last_snapshot = path     # rank 0 writes it; wait until it is on disk
            self.comm.barrier(f"the snapshot of iteration {self.solver.iter}")
            return path
        try:
            save_snapshot(path, params=self.train_net.param_keys, config=self.exp.text,
                          iteration=self.solver.iter, solver_type=self.solver.type_name,
                          history=self.solver.state(), rng=self.rngs.state(),
                          data_state={layer.name: layer.extra_state()
                                      for layer in self.train_net.data_layers()},
                          callbacks={c.state_key: c.state() for c in self.callbacks
                                     if c.state_key is not None},
                          preprocessing={layer.name: layer.preprocessing
                                         for layer in self.test_net.data_layers()},
                          seconds=time.perf_counter() - self._start)
        except SnapshotError as err:
            # The failed write left nothing behind; say what the user still has.
            kept = (f"the last good snapshot is {self.last_snapshot}" if self.last_snapshot
                    else "no earlier snapshot was written")
            raise SnapshotError(f"{err}; {kept}") from None
        self.run.log(f"snapshot {path}")
        self.last_snapshot = path
        for removed in self.run.prune_snapshots(self.s.snapshot_keep):
            self.run.log(f"removed old snapshot {removed}")
        if self.comm is not None:
            # A stop right after this snapshot ends every rank: none may end rank 0 first.
            self.comm.barrier(f"the snapshot of iteration {self.solver.iter}")
        return path

    def _first_bad_blob(self) -> str:
        """The first layer, in forward order, whose output holds a NaN or inf."""
        return self.train_net.first_nonfinite_output()

    def _first_bad_gradient(self) -> str:
        """The first layer, in backward order, with a NaN or inf parameter gradient."""
        for node in reversed(self.train_net.nodes):
            for i, p in enumerate(node.layer.blobs):
                if not np.all(np.isfinite(p.diff)):
                    return f"first non-finite gradient: layer '{node.layer.name}' param {i}"
        return ""

    def _first_bad_weight(self) -> str:
        for layer, i, p in self.train_net.param_keys:
            if not np.all(np.isfinite(p.data)):
                return f"first non-finite weight: layer '{layer}' param {i}"
        return ""

    def _diverged(self, what: str, where: str) -> None:
        """Stop before the update, so no NaN weights are ever written."""
        parts = [f"training diverged at iteration {self.solver.iter}: {what}"]
        if where:
            parts.append(where)
        parts.append(f"last good snapshot: {self.last_snapshot}" if self.last_snapshot
                     else "no snapshot was written yet")
        msg = "; ".join(parts)
        self.run.log(msg)
        raise TrainingError(msg)


def snapshot_experiment(path: str | Path) -> ExperimentSpec:
    """The config a snapshot was trained with (``cnntrain train --resume SNAP``)."""
    from cnntrain.snapshot import stored_experiment

    snap = load_snapshot(path)
    if not snap.resumable or not snap.data_state:
        raise SnapshotError(f"{path}: this snapshot has weights only; use --weights with a "
                            "CONFIG to start from them")
    return stored_experiment(snap)


def load_test_net(path: str | Path, data_dir: str | None,
                  notify: Callable[[str], None] = print,
                  device: Device = CPU) -> tuple[Snapshot, ExperimentSpec, Net]:
    """A snapshot's TEST net with its weights, built from the config stored inside it,
    on ``device`` (wherever the snapshot was trained: snapshots hold host arrays)."""
    from cnntrain.snapshot import stored_experiment

    snap: Snapshot = load_snapshot(path)
    exp = stored_experiment(snap)
    ctx = BuildContext(rngs=RngStreams(exp.solver.random_seed),
                       data_dir=None if data_dir is None else Path(data_dir), notify=notify,
                       preprocessing=snap.preprocessing, device=device)
    test_net = Net(exp.net, "TEST", ctx)  # only the TEST net: no training data to load
    copy_weights(test_net, snap, strict=True)
    if not test_net.data_layers():
        raise SnapshotError(f"the net in {path} has no TEST data layer to evaluate on")
    return snap, exp, test_net


def evaluate_snapshot_net(test_net: Net, iterations: int | None,
                          tta: str | None = None, progress=None) -> Evaluation:
    """Evaluate a snapshot's TEST net as ``cnntrain test`` does. ``tta`` ("flip",
    "flip+shift"): also average the softmax over those views of each image
    (``evaluate.tta_views``); None: the views the TEST Data layer declares in
    ``transform_param.test_views``; "none": one view only. ``progress`` as in
    :func:`cnntrain.evaluate.evaluate`."""
    if tta is None:
        tta = test_net.data_layers()[0].test_views
    return evaluate(test_net, iterations, None if tta == "none" else tta, progress=progress)


def test_snapshot(path: str | Path, data_dir: str | None, iterations: int | None,
                  notify: Callable[[str], None] = print, tta: str | None = None,
                  progress: bool = False, device: Device = CPU) -> Evaluation:
    """Evaluate a snapshot on its TEST net, built from the config stored inside it (``tta``
    as in :func:`evaluate_snapshot_net`); ``progress``: show a bar over the batches."""
    _, _, test_net = load_test_net(path, data_dir, notify, device)
    bar = None
    if progress:
        from cnntrain.progress import progress_bar

        def bar(batches: int):
            return progress_bar(batches, f"testing {Path(path).name}", "batch")
    ev = evaluate_snapshot_net(test_net, iterations, tta, bar)
    if ev.nonfinite_note:
        notify(ev.nonfinite_note)
    return ev
