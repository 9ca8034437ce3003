"""The run folder: runs/<name>/{config.yaml, train.log, metrics.csv, snapshots/}."""
from __future__ import annotations

import csv
import io
import os
import time
from contextlib import contextmanager
from pathlib import Path

from cnntrain.errors import CnnTrainError, os_error_reason
from cnntrain.snapshot import atomic_write


def _alive(pid: int) -> bool:
    """Whether process ``pid`` still runs (a run folder's writer may be another process)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:   # it exists but belongs to someone else
        return True
    return True


METRIC_FIELDS = ("iter", "loss", "lr", "test_loss", "test_accuracy", "seconds")


class RunDir:
    """Owns the files of one run; appends to the log and metrics as training goes."""

    def __init__(self, root: Path, name: str):
        self.path = Path(root) / name
        self.snapshots = self.path / "snapshots"
        self.log_path = self.path / "train.log"
        self.metrics_path = self.path / "metrics.csv"

    def start(self, config_text: str, resume_iter: int | None) -> None:
        """Create the folder; a fresh run starts new files, a resume keeps earlier rows."""
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
                self.log_path.write_text("")

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
        """Delete the half-written ``.NAME.tmp-PID`` files of runs that were killed
        (``atomic_write`` removes its own on any error it lives through)."""
        for folder in (self.path, self.snapshots):
            for tmp in folder.glob(".*.tmp-*"):
                pid = tmp.name.rsplit(".tmp-", 1)[1]
                if pid.isdigit() and not _alive(int(pid)):
                    tmp.unlink(missing_ok=True)

    def _rows_until(self, iteration: int) -> list[dict]:
        """Rows up to the resumed iteration: later ones will be trained again."""
        if not self.metrics_path.is_file():
            return []
        with open(self.metrics_path, newline="") as f:
            return [r for r in csv.DictReader(f) if r.get("iter", "").isdigit()
                    and int(r["iter"]) <= iteration]

    def _rewrite_metrics(self, rows: list[dict]) -> None:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, METRIC_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
        atomic_write(self.metrics_path, lambda p: p.write_text(buf.getvalue()))

    def metric(self, **row) -> None:
        with self._writing(self.metrics_path), open(self.metrics_path, "a", newline="") as f:
            csv.DictWriter(f, METRIC_FIELDS).writerow(
                {k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})

    def log(self, line: str) -> None:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        with self._writing(self.log_path), open(self.log_path, "a") as f:
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
