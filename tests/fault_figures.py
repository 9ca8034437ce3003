"""The fault suite's figures, measured as the tests run and printed at the end of the
session (see ``conftest.py``): how many configs were fuzzed, hostile files refused,
kills survived, and how many tracebacks and executions of code from data were seen
(the last two must stay 0; the tests that count them also fail when they are not).
"""
from __future__ import annotations

import json
import os
from collections import Counter

LABELS = {
    "configs_fuzzed": "configs fuzzed (train --dry-run and train)",
    "hostile_files": "hostile files refused",
    "kills": "SIGKILLs of train subprocesses",
    "kills_in_snapshot_write": "  of which during a snapshot write",
    "kills_survived": "kills survived (resumed to bit-identical weights)",
    "disk_full": "disk-full faults handled",
    "numerical": "numerical faults stopped",
    "wrong_answers": "non-finite scores and odd images never scored as right",
    "same_verdict": "configs given the same verdict by train --dry-run and train",
    "run_folder": "run-folder faults refused (second writer, old run, symlink)",
    "names": "names refused where the config is read",
    "resume_changes": "resumes with a changed config refused or overridden",
    "hostile_structure": "hostile snapshot, prototxt and archive structures refused",
    "tracebacks": "tracebacks seen (must be 0)",
    "code_executed": "code executed from data (must be 0)",
}

COUNTS: Counter = Counter()


def add(name: str, n: int = 1) -> None:
    if name not in LABELS:
        raise KeyError(name)
    COUNTS[name] += n


def report_lines() -> list[str]:
    if not any(COUNTS[k] for k in LABELS if k not in ("tracebacks", "code_executed")):
        return []
    return [f"{LABELS[k]}: {COUNTS[k]}" for k in LABELS]


def write_json() -> None:
    """With CNNTRAIN_FAULT_FIGURES=path, the figures are also written there as JSON."""
    path = os.environ.get("CNNTRAIN_FAULT_FIGURES")
    if path and report_lines():
        with open(path, "w") as f:
            json.dump({k: COUNTS[k] for k in LABELS}, f, indent=2)
