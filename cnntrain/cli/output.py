"""Output conventions shared by the commands.

Tables for people, colour only on a terminal (click drops it otherwise; NO_COLOR turns
it off), ``--quiet`` for the essential lines only, ``--json`` for one JSON document on
stdout. Errors are one line on stderr with the exit codes of ``cnntrain --help``.
"""
from __future__ import annotations

import json
import os

import click

QUIET = click.option("-q", "--quiet", is_flag=True, help="Print only the essential lines.")
JSON = click.option("--json", "as_json", is_flag=True,
                    help="Print one JSON document on stdout (for scripts).")


def style(text: str, **kwargs) -> str:
    """Colour for terminals: click.echo strips it when stdout is not a TTY."""
    if os.environ.get("NO_COLOR"):
        return text
    return click.style(text, **kwargs)


def echo_json(document) -> None:
    click.echo(json.dumps(document, indent=2))


def print_summary(exp, as_json: bool = False, quiet: bool = False) -> None:
    """For ``cnntrain train --dry-run``: the TRAIN net's layers (top shapes, parameters,
    MACs) and the TEST net's extra layers, built without data. ``quiet``: one line of
    totals."""
    from cnntrain.tools.summary import format_summary, summarize

    train = summarize(exp, "TRAIN")
    test = summarize(exp, "TEST")
    if as_json:
        echo_json({"config": exp.file, "name": exp.name, "train": train.as_dict(),
                   "test": test.as_dict()})
        return
    if quiet:
        click.echo(f"{exp.file}: {len(train.rows)} layers, {train.params} parameters, "
                   f"{train.macs} MACs per image")
        return
    for line in format_summary(train):
        click.echo(line)
    train_names = {r.name for r in train.rows}
    extra = [f"{r.name} ({r.type})" for r in test.rows if r.name not in train_names]
    click.echo(f"TEST net: {len(test.rows)} layers, batch {test.batch}"
               + (f"; only in TEST: {', '.join(extra)}" if extra else ""))
    s = exp.solver
    click.echo(f"solver: {s.type}, base_lr {s.base_lr:g}, lr_policy {s.lr_policy}, "
               f"max_iter {s.max_iter}")
    click.echo(style(f"config OK: {exp.file}", fg="green"))
