"""``cnntrain port``: convert CIFAR-10/100 to native files and write the configs that read them.

The source is ``--from`` (an official archive or folder, either format, any file
name), else what ``load_cifar`` would read in the data folder, else the official
python archive, downloaded there with its MD5 checked. Everything is read and checked
before anything is written, so a truncated, corrupt or hostile source leaves no
output. A second run with the same source finds the files intact and skips them.
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from cnntrain.data import config_templates
from cnntrain.data.cifar import (ARCHIVES, DATASETS, fetch_official, load_cifar_from,
                                 local_source)
from cnntrain.data.download import file_md5
from cnntrain.data.native import (SourceInfo, fine_to_coarse, native_path, recorded_source,
                                  train_stats, verify_native, write_native)
from cnntrain.errors import CnnTrainError, DatasetError

SPLITS = ("train", "test")
Notify = Callable[[str], None]


@dataclass
class PortResult:
    files: dict[str, Path]                  # split → native file
    converted: bool                         # False: verified and skipped
    configs: list[Path] = field(default_factory=list)
    seconds: float = 0.0


def folder_md5(folder: Path) -> str:
    """MD5 over a folder's regular files, in name order, each as its name then its bytes."""
    digest = hashlib.md5()
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode() + b"\0")
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def describe_source(path: Path) -> SourceInfo:
    """The source's checksum: the archive's MD5, or the MD5 of the folder's files."""
    path = Path(path)
    try:
        if path.is_dir():
            return SourceInfo(str(path), "folder", folder_md5(path),
                              "folder: MD5 of its files in name order (name, then bytes)")
        md5 = file_md5(path)
    except OSError as exc:
        raise DatasetError(f"cannot read {path}: {exc.strerror or exc}") from None
    official = [name for name, a in ARCHIVES.items() if a.md5 == md5]
    note = (f"the official {official[0]}" if official
            else "not byte-identical to an official archive")
    return SourceInfo(str(path), "archive", md5, note)


def _convert(name: str, source: SourceInfo, files: dict[str, Path], notify: Notify) -> None:
    from cnntrain.progress import Steps

    steps = Steps(2 + len(SPLITS), notify)    # each a few seconds on the real datasets
    steps.step(f"reading {source.path} ({source.kind}, MD5 {source.md5}"
               f"{', ' + source.note if source.kind == 'archive' else ''})")
    splits = load_cifar_from(name, Path(source.path), SPLITS)   # everything checked first
    train = splits["train"]
    steps.step("computing the training split's mean image and channel mean/std")
    stats = train_stats(train.images)
    mapping = None
    if train.coarse_labels is not None:
        both = [splits[s] for s in SPLITS]
        mapping = fine_to_coarse(np.concatenate([s.labels for s in both]),
                                 np.concatenate([s.coarse_labels for s in both]),
                                 len(train.label_names), source.path)
    for split in SPLITS:
        steps.step(f"writing {files[split]}")
        write_native(files[split], splits[split], dataset=name, split=split, stats=stats,
                     source=source, mapping=mapping)
        size = files[split].stat().st_size / 1e6
        notify(f"wrote {files[split]} ({len(splits[split].labels)} images, {size:.1f} MB)")


def write_configs(name: str, labels: str, configs_dir: Path, overwrite: bool,
                  notify: Notify) -> list[Path]:
    """Render the dataset's configs into ``configs_dir``; an existing file that differs
    (edited by hand) is kept unless ``overwrite``."""
    from cnntrain.snapshot import atomic_write

    written = []
    for kind in config_templates.kinds(name):
        text = config_templates.render(name, labels, kind)
        path = Path(configs_dir) / f"{config_templates.config_name(name, labels, kind)}.yaml"
        try:
            old = path.read_text() if path.is_file() else None
            if old == text:
                notify(f"{path} is up to date")
            elif old is not None and not overwrite:
                notify(f"note: {path} differs from what port writes (edited?); kept as it is "
                       "(pass --overwrite-configs to replace it)")
            else:
                atomic_write(path, lambda tmp: tmp.write_text(text))
                notify(f"wrote {path}")
        except OSError as exc:
            raise CnnTrainError(f"cannot write {path}: {exc.strerror or exc}") from None
        written.append(path)
    return written


def port(name: str, *, data_dir: Path, from_path: Path | None = None, labels: str = "fine",
         configs_dir: Path | None = Path("configs"), overwrite_configs: bool = False,
         notify: Notify = print) -> PortResult:
    """Convert ``name`` ("cifar10" or "cifar100") into ``data_dir`` and write its configs."""
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset '{name}': expected one of {', '.join(DATASETS)}")
    if labels == "coarse" and len(DATASETS[name].classes) < 2:
        raise CnnTrainError(f"{name} has no coarse labels (only cifar100 has superclasses)")
    start = time.perf_counter()
    data_dir = Path(data_dir).expanduser()
    files = {split: native_path(data_dir, name, split) for split in SPLITS}
    if data_dir.is_dir():     # the temporaries of a port that was killed mid-write
        from cnntrain.snapshot import remove_stale_temporaries

        remove_stale_temporaries(data_dir)
    if from_path is not None:
        source_path = Path(from_path).expanduser()
        if not source_path.exists():
            raise DatasetError(f"--from {source_path}: not found")
    else:
        source_path = local_source(name, data_dir)
    source = describe_source(source_path) if source_path is not None else None
    converted = True
    if all(f.is_file() for f in files.values()):
        # Without the source at hand, both files must at least come from the same one.
        recorded = recorded_source(files["train"])
        want = source.md5 if source else (recorded.md5 if recorded else None)
        problems = [p for p in (verify_native(files[s], name, s, want) for s in SPLITS) if p]
        if not problems:
            converted = False
            against = (f"match the source {source.path} (MD5 {source.md5})" if source else
                       "were checked on their own (the source is not at hand)")
            notify(f"{files['train']} and {files['test'].name} are intact and {against}: "
                   "skipped converting")
        else:
            notify(f"{problems[0]}; converting again")
    if converted:
        if source is None:
            try:
                fetched = fetch_official(name, data_dir, notify)
            except DatasetError as err:
                raise DatasetError(f"{err}; or give the official archive or folder with "
                                   "--from PATH") from None
            source = describe_source(fetched)
        _convert(name, source, files, notify)
    configs = ([] if configs_dir is None else
               write_configs(name, labels, configs_dir, overwrite_configs, notify))
    return PortResult(files, converted, configs, time.perf_counter() - start)
