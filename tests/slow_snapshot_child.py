"""``cnntrain ARGS`` in a subprocess whose snapshot writes are slowed down, for the kill
tests: the bytes of each HDF5 file go to disk in 4 KiB pieces, each flushed and followed
by a sleep of ``CNNTRAIN_TEST_WRITE_DELAY`` seconds, so a SIGKILL can be aimed into the
middle of a write. Nothing else changes: it is the real command, in a real process.

    python tests/slow_snapshot_child.py train CONFIG --runs-dir ... --no-progress
"""
import builtins
import os
import sys
import time

import cnntrain.safe_hdf5

DELAY = float(os.environ.get("CNNTRAIN_TEST_WRITE_DELAY", "0.003"))
PIECE = 4096


class _SlowFile:
    def __init__(self, f):
        self.f = f

    def write(self, data):
        view = memoryview(data)
        for start in range(0, len(view), PIECE):
            self.f.write(view[start:start + PIECE])
            self.f.flush()
            time.sleep(DELAY)
        return len(view)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


def _slow_open(path, mode="r", *args, **kwargs):
    f = builtins.open(path, mode, *args, **kwargs)
    return _SlowFile(f) if "w" in mode else f


# write_hdf5 looks ``open`` up in its module first: only its writes are slowed.
cnntrain.safe_hdf5.open = _slow_open

if __name__ == "__main__":
    from cnntrain.cli import main

    main(sys.argv[1:], prog_name="cnntrain")
