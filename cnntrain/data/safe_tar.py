"""Read or extract a ``.tar.gz`` without trusting it.

A downloaded (or handed-over) archive may name members ``../../x`` or ``/etc/x``,
or hold links and device files that make a naive extraction write outside its
folder. Every member is checked; the first bad one stops everything with a
:class:`DatasetError` naming the archive and the member, and nothing is returned
or left on disk.
"""
from __future__ import annotations

import gzip
import os
import shutil
import tarfile
import tempfile
import zlib
from pathlib import Path
from typing import Callable, Iterator

from cnntrain.errors import DatasetError

# The largest CIFAR member (CIFAR-100's python train batch) is 155 MB; these stop a
# small archive that inflates into huge members from taking all memory. Sizes are the
# members' declared ones, checked before a member is read (and a member is never read
# past its declared size).
MAX_MEMBER_BYTES = 1 << 28
MAX_ARCHIVE_BYTES = 1 << 30

_CHUNK = 1 << 20


def error_reason(exc: BaseException) -> str:
    """The first line of an exception's message (its type name when it has none)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _kind(member: tarfile.TarInfo) -> str:
    if member.issym():
        return "a symbolic link"
    if member.islnk():
        return "a hard link"
    if member.ischr() or member.isblk():
        return "a device file"
    if member.isfifo():
        return "a fifo"
    return f"of unsupported type {member.type!r}"


def member_path(archive: Path, member: tarfile.TarInfo) -> str:
    """The member's name, normalised (no ``./``, no trailing ``/``), once proved safe."""
    name = member.name
    parts = name.replace("\\", "/").split("/")
    if name.startswith(("/", "\\")) or (len(parts[0]) == 2 and parts[0][1] == ":"):
        raise DatasetError(f"refusing to read {archive}: member '{name}' has an absolute path")
    if ".." in parts:
        raise DatasetError(f"refusing to read {archive}: member '{name}' leaves the archive "
                           "folder ('..' in its path)")
    if not (member.isfile() or member.isdir()):
        raise DatasetError(f"refusing to read {archive}: member '{name}' is {_kind(member)}")
    if member.isfile() and member.size > MAX_MEMBER_BYTES:
        raise DatasetError(f"refusing to read {archive}: member '{name}' claims "
                           f"{member.size} bytes (more than {MAX_MEMBER_BYTES})")
    return "/".join(p for p in name.split("/") if p not in ("", "."))


def _walk(archive: Path, want: Callable[[str], bool]
          ) -> Iterator[tuple[str, tarfile.TarInfo, bytes | None]]:
    """Yield (name, member, data) for every member, in archive order, after checking it.

    ``data`` is read only for wanted regular files. One streaming pass: a seekable
    tar over gzip would decompress the archive again for each member read.
    """
    try:
        raw = open(archive, "rb")
    except OSError as exc:
        raise DatasetError(f"cannot read {archive}: {error_reason(exc)}") from None
    try:
        with raw, gzip.GzipFile(fileobj=raw, mode="rb") as gz:
            with tarfile.open(fileobj=gz, mode="r|", bufsize=_CHUNK) as tar:
                seen: set[str] = set()
                total = 0
                for member in tar:
                    name = member_path(archive, member)
                    if name in seen and not member.isdir():
                        raise DatasetError(f"refusing to read {archive}: it holds two members "
                                           f"named '{name}'")
                    seen.add(name)
                    total += member.size if member.isfile() else 0
                    if total > MAX_ARCHIVE_BYTES:
                        raise DatasetError(f"refusing to read {archive}: its members claim "
                                           f"more than {MAX_ARCHIVE_BYTES} bytes in all")
                    data = None
                    if member.isfile() and want(name):
                        data = tar.extractfile(member).read()
                        if len(data) != member.size:
                            raise EOFError(f"member '{name}' is cut short")
                    yield name, member, data
            # tar stops at its end marker; reading gzip to its end checks the CRC and
            # length trailer, so a cut-off archive is never taken for a whole one.
            while gz.read(_CHUNK):
                pass
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise DatasetError(f"{archive} is truncated or corrupt: {error_reason(exc)}") from None


def read_members(archive: Path, wanted: set[str] | Callable[[str], bool]) -> dict[str, bytes]:
    """The bytes of the wanted regular-file members of a ``.tar.gz``, read in memory.

    ``wanted`` is a set of member names (as ``folder/file``, without ``./``) or a
    predicate on them. Every member is validated, wanted or not, before anything is
    returned; names not found are simply absent from the result.
    """
    want = wanted.__contains__ if isinstance(wanted, (set, frozenset)) else wanted
    return {name: data for name, _, data in _walk(Path(archive), want) if data is not None}


def extract_safely(archive: Path, dest: Path) -> Path:
    """Extract a ``.tar.gz`` so that its members end up under ``dest`` (which must not exist).

    The members go into a temporary folder beside ``dest`` that is renamed to
    ``dest`` only once everything was validated and written, so a failure leaves
    neither ``dest`` nor a half-written folder behind.
    """
    archive, dest = Path(archive), Path(dest)
    if dest.exists():
        raise DatasetError(f"cannot extract {archive}: {dest} already exists")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent))
    try:
        for name, member, data in _walk(archive, lambda _name: True):
            target = tmp.joinpath(*name.split("/")) if name else tmp
            if member.isdir():
                target.mkdir(parents=True, exist_ok=True)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
        os.replace(tmp, dest)
    except OSError as exc:
        raise DatasetError(f"cannot extract {archive} to {dest}: {error_reason(exc)}") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest
