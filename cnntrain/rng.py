"""Named random streams derived from one seed, so each purpose is reproducible alone.

Init, shuffling, augmentation and dropout draw from separate streams: changing the
number of dropout layers never changes the data order, and a snapshot can restore
every stream exactly.
"""
from __future__ import annotations

import json
import zlib

import numpy as np


class RngStreams:
    """A lazily created ``np.random.Generator`` per name, all derived from ``seed``."""

    def __init__(self, seed: int):
        self.seed = int(seed)
        self._streams: dict[str, np.random.Generator] = {}

    def get(self, name: str) -> np.random.Generator:
        if name not in self._streams:
            seq = np.random.SeedSequence(self.seed, spawn_key=(zlib.crc32(name.encode()),))
            self._streams[name] = np.random.Generator(np.random.PCG64(seq))
        return self._streams[name]

    def state(self) -> str:
        """All stream states as JSON text (bit generator states hold big ints)."""
        return json.dumps({name: g.bit_generator.state for name, g in self._streams.items()})

    def set_state(self, text: str) -> None:
        """Restore :meth:`state`; anything else is a ValueError that says what is wrong."""
        try:
            states = json.loads(text)
        except RecursionError:
            raise ValueError("the random generator state is nested too deeply") from None
        except ValueError as err:
            raise ValueError(f"the random generator state is not JSON "
                             f"({str(err).splitlines()[0]})") from None
        if not isinstance(states, dict):
            raise ValueError("the random generator state is not a mapping of streams")
        for name, state in states.items():
            try:
                self.get(str(name)).bit_generator.state = state
            except (ValueError, TypeError, KeyError, OverflowError, RecursionError) as err:
                raise ValueError(f"the random generator state of stream '{name}' is invalid "
                                 f"({err})") from None
