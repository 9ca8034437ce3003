"""Errors that reach the user as one line, never as a traceback.

Every failure a user can cause (a bad config, a missing dataset, a corrupt snapshot)
raises a subclass of :class:`CnnTrainError`; the CLI prints ``str(error)`` and exits.
"""
from __future__ import annotations


class CnnTrainError(Exception):
    """Base class: the message is complete and fits on one line."""

    exit_code = 1


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
