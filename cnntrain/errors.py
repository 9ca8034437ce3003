"""Errors that reach the user as one line, never as a traceback.

Every failure a user can cause (a bad config, a missing dataset, a corrupt snapshot)
raises a subclass of :class:`CnnTrainError`; the CLI prints ``str(error)`` and exits.
"""
from __future__ import annotations

import errno
import unicodedata

MAX_MESSAGE = 1000   # longer messages (a 5000-character key in a config) lose their middle


def one_line(text: str) -> str:
    """``text`` with control characters and line breaks escaped (a config key or a
    member name may hold any of them) and an over-long middle elided."""
    if not text.isprintable():
        text = "".join(repr(c)[1:-1] if unicodedata.category(c)[0] in "CZ" and c != " " else c
                       for c in text)
    if len(text) > MAX_MESSAGE:
        text = f"{text[:MAX_MESSAGE * 2 // 3]} [...] {text[-MAX_MESSAGE // 3:]}"
    return text


def os_error_reason(err: OSError) -> str:
    """Why a file operation failed, in words: "the disk is full" for ENOSPC, else the
    first line of the system's (or HDF5's, which spans lines) message."""
    if err.errno == errno.ENOSPC:
        return "the disk is full (no space left on device)"
    if err.errno == errno.EDQUOT:
        return "the disk quota is exceeded"
    text = err.strerror if isinstance(err.strerror, str) and err.strerror else str(err)
    return text.strip().splitlines()[0] if text.strip() else type(err).__name__


class CnnTrainError(Exception):
    """Base class: the message is complete and fits on one line (enforced here)."""

    exit_code = 1

    def __init__(self, message: str = "", *args):
        super().__init__(one_line(str(message)), *args)


class ConfigError(CnnTrainError):
    """A config file is invalid: names the file, the line, the layer and the field."""

    exit_code = 2

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None,
                 layer: str | None = None, field: str | None = None):
        self.file, self.line, self.layer, self.field = file, line, layer, field
        self.message = message
        super().__init__(self._format())

    def _format(self) -> str:
        where = ""
        if self.file:
            where = f"{self.file}:{self.line}: " if self.line else f"{self.file}: "
        parts = []
        if self.layer:
            parts.append(f"layer '{self.layer}'")
        if self.field:
            parts.append(f"field '{self.field}'")
        context = ", ".join(parts)
        return f"{where}{context + ': ' if context else ''}{self.message}"


class DatasetError(CnnTrainError):
    """A dataset is missing, unreadable, corrupt or unsafe."""

    exit_code = 3


class SnapshotError(CnnTrainError):
    """A snapshot is missing, corrupt, or does not fit the net it is loaded into."""

    exit_code = 4


class TrainingError(CnnTrainError):
    """Training cannot go on (for example the loss diverged)."""

    exit_code = 5
