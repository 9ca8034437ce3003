"""TensorBoard event files of a run (``train --tensorboard`` or ``logging: {tensorboard:
true}``), through the optional tensorboardX writer (``pip install 'cnntrain[tensorboard]'``;
it needs neither TensorFlow nor PyTorch).

Scalars are written at the same points as the rows of metrics.csv: training loss and
learning rate at each display, test loss and accuracy at each test, plus the test's
top-5 accuracy and every other scalar output of the TEST net.
"""
from __future__ import annotations

from pathlib import Path

from cnntrain.callbacks import Callback
from cnntrain.errors import CnnTrainError

INSTALL_HINT = ("TensorBoard logging needs tensorboardX: pip install 'cnntrain[tensorboard]' "
                "(or pip install tensorboardX)")
# metrics.csv column → TensorBoard tag.
TAGS = {"loss": "train/loss", "lr": "train/lr", "test_loss": "test/loss",
        "test_accuracy": "test/accuracy"}


def require_tensorboard():
    """The writer class; a missing package is a one-line error that says what to install."""
    try:
        from tensorboardX import SummaryWriter
    except ImportError:
        raise CnnTrainError(INSTALL_HINT) from None
    return SummaryWriter


class TensorBoardLogger(Callback):
    """Writes scalars to ``runs/<name>/tensorboard`` (or ``log_dir``). On resume, the
    events past the resumed iteration (left by the interrupted process) are hidden by
    TensorBoard's purge step."""

    def __init__(self, log_dir: str | Path | None = None):
        self.writer_class = require_tensorboard()     # fails before any training
        self.log_dir = Path(log_dir) if log_dir else None
        self.writer = None

    def on_train_start(self, trainer) -> None:
        log_dir = self.log_dir or trainer.run.path / "tensorboard"
        start = trainer.solver.iter
        try:
            # A resumed run continues after the snapshot's iteration, whose rows it keeps.
            # Its own file suffix: a file name has a one-second timestamp only.
            self.writer = self.writer_class(logdir=str(log_dir),
                                            purge_step=start + 1 if start else None,
                                            flush_secs=10, filename_suffix=f".from{start}")
        except OSError as err:
            raise CnnTrainError(f"cannot write TensorBoard logs to {log_dir}: "
                                f"{err.strerror or err}") from None
        self.log_dir = log_dir

    def on_metrics(self, row: dict) -> None:
        step = row["iter"]
        for column, tag in TAGS.items():
            value = row.get(column)
            if value is not None:
                self.writer.add_scalar(tag, float(value), step)

    def on_test(self, trainer, evaluation):
        step = trainer.solver.iter
        scores = evaluation.single
        if scores is not None:
            self.writer.add_scalar(f"test/top{scores.k5}", scores.top5, step)
        for name, value in evaluation.outputs.items():
            tag = f"test/{name}"
            # The loss and accuracy were written from the metrics row already.
            if name != evaluation.accuracy_blob and tag not in TAGS.values():
                self.writer.add_scalar(tag, float(value), step)
        self.writer.flush()
        return None

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
