"""Which images go into each batch: seeded per-epoch shuffling, resumable exactly."""
from __future__ import annotations

import numpy as np


class BatchSampler:
    """Yields index arrays of ``batch_size``; reshuffles at each epoch when ``shuffle``.

    With ``wrap``, batches run across epoch ends (Caffe's behaviour), so every batch
    is full; without it the last batch of a pass is short and the next pass restarts.
    ``state()``/``set_state()`` hold the permutation and cursor, so a resumed run
    draws exactly the batches an uninterrupted one would.
    """

    def __init__(self, size: int, batch_size: int, shuffle: bool, rng: np.random.Generator,
                 wrap: bool = True):
        self.size, self.batch_size, self.shuffle, self.rng = size, batch_size, shuffle, rng
        self.wrap = wrap
        self.epoch = 0
        self.last_epochs = np.zeros(0, np.int64)
        self._new_order()

    def _new_order(self) -> None:
        self.order = self.rng.permutation(self.size) if self.shuffle else np.arange(self.size)
        self.cursor = 0

    def next(self) -> np.ndarray:
        """The next batch's indices; ``last_epochs`` then holds the epoch each came from
        (with ``wrap``, a batch may run across an epoch's end)."""
        parts, epochs, need = [], [], self.batch_size
        if not self.wrap:
            if self.cursor == self.size:
                self.epoch += 1
                self._new_order()
            need = min(need, self.size - self.cursor)
        while need:
            if self.cursor == self.size:
                self.epoch += 1
                self._new_order()
            take = min(need, self.size - self.cursor)
            parts.append(self.order[self.cursor:self.cursor + take])
            epochs.append(np.full(take, self.epoch, np.int64))
            self.cursor += take
            need -= take
        if len(parts) == 1:
            self.last_epochs = epochs[0]
            return parts[0]
        self.last_epochs = np.concatenate(epochs)
        return np.concatenate(parts)

    def rewind(self) -> None:
        """Back to the first batch of the current order (a fresh pass over a test set)."""
        self.cursor = 0

    def state(self) -> dict[str, np.ndarray]:
        return {"order": self.order.astype(np.int64), "cursor": np.int64(self.cursor),
                "epoch": np.int64(self.epoch)}

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        """Restore :meth:`state`; a ValueError says what does not fit this dataset."""
        missing = {"order", "cursor", "epoch"} - set(state)
        if missing:
            raise ValueError(f"data position lacks {', '.join(sorted(missing))}")
        order = np.asarray(state["order"])
        if order.shape != (self.size,):
            raise ValueError(f"data order has {order.size} entries, the dataset {self.size}")
        if order.dtype.kind not in "iu" or not np.array_equal(np.sort(order),
                                                              np.arange(self.size)):
            raise ValueError(f"data order is not a permutation of the {self.size} images")
        cursor, epoch = (np.asarray(state[k]) for k in ("cursor", "epoch"))
        if cursor.shape or epoch.shape or cursor.dtype.kind not in "iu" \
                or epoch.dtype.kind not in "iu" or not 0 <= int(cursor) <= self.size \
                or int(epoch) < 0:
            raise ValueError(f"data cursor {cursor} or epoch {epoch} is out of range")
        self.order, self.cursor, self.epoch = order.astype(np.int64), int(cursor), int(epoch)
