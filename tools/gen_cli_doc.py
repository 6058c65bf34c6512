"""Regenerate docs/cli.md from the Typer app's own help (run: .venv/bin/python tools/gen_cli_doc.py)."""

from __future__ import annotations

from pathlib import Path

import click
import typer
from typer.testing import CliRunner

from clinmm.cli import app


def _commands(command, path: list[str]):
    if getattr(command, "commands", None):  # a group (Typer vendors its own click classes)
        if path:
            yield path
        for name in sorted(command.commands):
            yield from _commands(command.commands[name], path + [name])
    else:
        yield path


def main() -> None:
    runner = CliRunner()
    env = {"COLUMNS": "110", "TERMINAL_WIDTH": "110", "NO_COLOR": "1"}
    parts = ["# CLI reference", "",
             "Generated from `clinmm --help` by `tools/gen_cli_doc.py`; every command is a thin wrapper around one "
             "library function (see [api.md](api.md)). Exit codes: 0 success, 2 usage or input error (the message "
             "names the file and what was wrong), 3 `clinmm score` finished but some file or study was not ok "
             "(listed in errors.csv).", ""]
    for path in [[]] + list(_commands(typer.main.get_command(app), [])):
        result = runner.invoke(app, path + ["--help"], env=env, terminal_width=110)
        text = "\n".join(line.rstrip() for line in click.unstyle(result.output).splitlines()).strip("\n")
        parts += [f"## `{' '.join(['clinmm'] + path)}`", "", "```text", text, "```", ""]
    Path("docs/cli.md").write_text("\n".join(parts), encoding="utf-8")


if __name__ == "__main__":
    main()
