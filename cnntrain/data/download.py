"""Download one file, verified by MD5, so that a failure never leaves a partial file.

The bytes go to a temporary file beside ``dest`` that is renamed to ``dest`` only
once the whole body arrived and its MD5 matched; anything else removes it.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
from pathlib import Path
from typing import BinaryIO
from urllib.error import HTTPError, URLError
from urllib.request import urlopen

from tqdm import tqdm

from cnntrain.data.safe_tar import error_reason
from cnntrain.errors import DatasetError

_CHUNK = 1 << 20


def file_md5(path: Path) -> str:
    """The hex MD5 of a file, read in chunks."""
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _why(exc: BaseException) -> str:
    if isinstance(exc, HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, URLError):
        reason = exc.reason
        return error_reason(reason) if isinstance(reason, BaseException) else str(reason)
    return error_reason(exc)


def _fetch(url: str, out: BinaryIO, label: str, timeout: float) -> str:
    """Copy the body at ``url`` into ``out`` with a progress bar; return its hex MD5."""
    digest, received = hashlib.md5(), 0
    with urlopen(url, timeout=timeout) as response:
        total = int(response.headers.get("Content-Length") or 0) or None
        with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=label,
                  disable=None) as bar:
            for chunk in iter(lambda: response.read(_CHUNK), b""):
                out.write(chunk)
                digest.update(chunk)
                received += len(chunk)
                bar.update(len(chunk))
    if total is not None and received != total:
        raise EOFError(f"the connection closed after {received} of {total} bytes")
    return digest.hexdigest()


def download(url: str, dest: Path, md5: str | None, *, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest``, checking the MD5 when one is given.

    Raises :class:`DatasetError` (one line: the URL and why) when the connection
    fails, the server answers with an error, the body is cut short or the MD5
    differs; ``dest`` is then left as it was and no temporary file remains.
    """
    dest = Path(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    except OSError as exc:
        raise DatasetError(f"cannot write {dest}: {error_reason(exc)}") from None
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            got = _fetch(url, out, dest.name, timeout)
        if md5 is not None and got != md5.lower():
            raise DatasetError(f"downloaded {url}, but its MD5 is {got} instead of {md5} "
                               "(a damaged or changed file); it was not kept")
        os.replace(tmp, dest)
    except (URLError, OSError, EOFError, http.client.HTTPException, ValueError) as exc:
        raise DatasetError(f"downloading {url} failed: {_why(exc)}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return dest
