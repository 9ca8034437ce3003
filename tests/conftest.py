"""Suite-wide settings: hypothesis profiles, the opt-in heavy fault runs, and the
fault suite's figures in the terminal summary.

The heavier randomized fault tests are marked ``fuzz_heavy`` and skipped unless asked for:

    python -m pytest -m fuzz_heavy                # only the heavy runs
    CNNTRAIN_FUZZ_HEAVY=1 python -m pytest        # everything, heavy runs included

The default (CI) runs are deterministic: hypothesis derandomized, fixed seeds for the
kill times.
"""
import os

import pytest

import fault_figures

try:
    from hypothesis import HealthCheck, settings
except ImportError:  # hypothesis is in the "test" extra; only the fuzz tests need it
    settings = None
else:
    _common = dict(deadline=None, database=None, print_blob=True,
                   suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                          HealthCheck.data_too_large])
    settings.register_profile("ci", derandomize=True, **_common)
    settings.register_profile("heavy", derandomize=False, **_common)
    settings.load_profile("ci")


def heavy_requested(config) -> bool:
    return bool(os.environ.get("CNNTRAIN_FUZZ_HEAVY")) or "fuzz_heavy" in (
        config.getoption("markexpr", "") or "")


def pytest_configure(config):
    if settings is not None and heavy_requested(config):
        settings.load_profile("heavy")


def pytest_collection_modifyitems(config, items):
    if heavy_requested(config):
        return
    skip = pytest.mark.skip(reason="heavy fault run: opt in with -m fuzz_heavy "
                                   "or CNNTRAIN_FUZZ_HEAVY=1")
    for item in items:
        if "fuzz_heavy" in item.keywords:
            item.add_marker(skip)


def pytest_runtest_logreport(report):
    # Existing single-file hostile tests carry @pytest.mark.hostile_file: each passing
    # case is one hostile file refused.
    if report.when == "call" and report.passed and "hostile_file" in report.keywords:
        fault_figures.add("hostile_files")


def pytest_terminal_summary(terminalreporter):
    lines = fault_figures.report_lines()
    if lines:
        terminalreporter.section("fault suite figures")
        for line in lines:
            terminalreporter.write_line(line)
        fault_figures.write_json()
