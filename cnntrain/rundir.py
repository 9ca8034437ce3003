"""The run folder: runs/<name>/{config.yaml, train.log, metrics.csv, snapshots/}.

One ``cnntrain train`` owns a run folder at a time: it holds an exclusive lock on
``runs/<name>/.lock`` (which names its pid) while it trains; the kernel drops the lock
when the process ends, however it ends, so the lock of a killed run is taken over. The
files it writes are real files inside the folder: a symbolic link in their place is
refused, never followed.
"""
from __future__ import annotations

import csv
import errno
import io
import os
import time
from contextlib import contextmanager
from pathlib import Path

from cnntrain.errors import CnnTrainError, os_error_reason
from cnntrain.snapshot import atomic_write, remove_stale_temporaries


METRIC_FIELDS = ("iter", "loss", "lr", "test_loss", "test_accuracy", "seconds")


class RunDir:
    """Owns the files of one run; appends to the log and metrics as training goes."""

    def __init__(self, root: Path, name: str):
        self.path = Path(root) / name
        self.snapshots = self.path / "snapshots"
        self.log_path = self.path / "train.log"
        self.metrics_path = self.path / "metrics.csv"
        self.lock_path = self.path / ".lock"
        self._lock_fd: int | None = None

    def start(self, config_text: str, resume_iter: int | None) -> None:
        """Take the folder (see :meth:`acquire`); a fresh run starts new files and
        refuses a folder that holds another run's snapshots, a resume keeps earlier rows."""
        self.acquire()
        try:
            self._refuse_links()
            if resume_iter is None and self.snapshot_files():
                newest = self.snapshot_path(max(self.snapshot_files()))
                raise CnnTrainError(
                    f"{self.path} holds the snapshots of an earlier run (the newest is "
                    f"{newest}); a fresh run never mixes with them: continue it with --resume "
                    f"{newest}, or give this run another name (--set name=NEW)")
            self._start_files(config_text, resume_iter)
        except BaseException:
            self.release()
            raise

    def acquire(self) -> None:
        """Lock the folder for this process, or refuse naming the pid that holds it."""
        import fcntl

        if self._lock_fd is not None:
            return
        with self._writing(self.path):
            self.path.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            holder = os.read(fd, 32).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            if err.errno not in (errno.EWOULDBLOCK, errno.EACCES):
                raise CnnTrainError(f"could not lock {self.lock_path}: "
                                    f"{os_error_reason(err)}") from None
            raise CnnTrainError(f"{self.path} is in use by another cnntrain train (pid "
                                f"{holder}); wait for it to end, or give this run another "
                                "name (--set name=NEW)") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd

    def release(self) -> None:
        """Give the folder up (the end of training; the process's end does it too)."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _refuse_links(self) -> None:
        """The run's files and snapshots/ must not be symbolic links: writing through
        one would change a file outside the folder."""
        for path in (self.snapshots, self.log_path, self.metrics_path,
                     self.path / "config.yaml"):
            if path.is_symlink():
                raise CnnTrainError(f"{path} is a symbolic link; cnntrain writes only real "
                                    "files inside the run folder: remove the link")

    def _start_files(self, config_text: str, resume_iter: int | None) -> None:
        with self._writing(self.path):
            self.snapshots.mkdir(parents=True, exist_ok=True)
            self._remove_stale_temporaries()
        with self._writing(self.path / "config.yaml"):
            atomic_write(self.path / "config.yaml", lambda p: p.write_text(config_text))
        with self._writing(self.metrics_path):
            if resume_iter is None:
                self._rewrite_metrics([])
            else:
                self._rewrite_metrics(self._rows_until(resume_iter))
        if resume_iter is None:
            with self._writing(self.log_path):
                atomic_write(self.log_path, lambda p: p.write_text(""))

    @staticmethod
    @contextmanager
    def _writing(path: Path):
        """A failed write of a run file (the disk full, a read-only folder) is a
        one-line error naming the file."""
        try:
            yield
        except OSError as err:
            raise CnnTrainError(f"could not write {path}: {os_error_reason(err)}") from None

    def _remove_stale_temporaries(self) -> None:
        for folder in (self.path, self.snapshots):
            remove_stale_temporaries(folder)

    def _rows_until(self, iteration: int) -> list[dict]:
        """Rows up to the resumed iteration: later ones will be trained again."""
        if not self.metrics_path.is_file():
            return []
        with open(self.metrics_path, newline="") as f:
            return [r for r in csv.DictReader(f) if r.get("iter", "").isdigit()
                    and int(r["iter"]) <= iteration]

    def seconds_until(self, iteration: int) -> float:
        """The ``seconds`` of the last metrics row up to ``iteration`` (0 without one):
        where a resume of a snapshot without its own time count goes on from."""
        seconds = [float(r["seconds"]) for r in self._rows_until(iteration)
                   if r.get("seconds")]
        return max(seconds, default=0.0)

    def _rewrite_metrics(self, rows: list[dict]) -> None:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, METRIC_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
        atomic_write(self.metrics_path, lambda p: p.write_text(buf.getvalue()))

    @staticmethod
    def _append(path: Path, newline: str | None = None):
        """``path`` opened for appending, never through a symbolic link."""
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        return open(fd, "a", newline=newline)

    def metric(self, **row) -> None:
        with self._writing(self.metrics_path), self._append(self.metrics_path, "") as f:
            csv.DictWriter(f, METRIC_FIELDS).writerow(
                {k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})

    def log(self, line: str) -> None:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        with self._writing(self.log_path), self._append(self.log_path) as f:
            f.write(f"{stamp} {line}\n")

    def snapshot_path(self, iteration: int) -> Path:
        return self.snapshots / f"iter_{iteration}.h5"

    def snapshot_files(self) -> dict[int, Path]:
        """The run's snapshots by iteration (temporary files of a crashed write excluded)."""
        found = {}
        for path in self.snapshots.glob("iter_*.h5"):
            number = path.stem[len("iter_"):]
            if number.isdigit():
                found[int(number)] = path
        return found

    def test_accuracies(self) -> dict[int, float]:
        """Test accuracy by iteration, from metrics.csv (it survives a resume)."""
        if not self.metrics_path.is_file():
            return {}
        with open(self.metrics_path, newline="") as f:
            return {int(r["iter"]): float(r["test_accuracy"]) for r in csv.DictReader(f)
                    if r.get("iter", "").isdigit() and r.get("test_accuracy")}

    def prune_snapshots(self, keep: int) -> list[Path]:
        """Delete all but the newest ``keep`` snapshots and the best-tested one."""
        files = self.snapshot_files()
        if keep <= 0 or len(files) <= keep:
            return []
        keep_iters = set(sorted(files)[-keep:])
        tested = {it: acc for it, acc in self.test_accuracies().items() if it in files}
        if tested:
            keep_iters.add(max(tested, key=lambda it: (tested[it], it)))
        removed = []
        for it, path in files.items():
            if it not in keep_iters:
                path.unlink(missing_ok=True)
                removed.append(path)
        return removed
