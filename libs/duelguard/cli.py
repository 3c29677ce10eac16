"""The `duelguard` command line. Commands live in duelguard/commands/<area>.py, each module adding
its commands with `register(app)`; heavy libraries are imported inside command bodies so that
`duelguard --help` starts in well under a second."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from duelguard.commands import classifier, data, loop, pipeline, registry, serving

app = typer.Typer(
    name="duelguard",
    help="Multilingual LLM guardrail factory: seed data, classifier, two-player loop, registry, Triton serving.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _global(
    ctx: typer.Context,
    params: Path = typer.Option(None, "--params", help="params.yaml to read (default: $DUELGUARD_PARAMS or ./params.yaml)."),
    profile: Optional[str] = typer.Option(None, "--profile", help="Profile for this command only (default: params.yaml's `profile`)."),
    root: Path = typer.Option(Path("."), "--root", help="Repository root that relative paths in params.yaml are resolved against."),
) -> None:
    ctx.obj = {"params_path": params, "profile": profile, "root": root}


for _module in (data, classifier, loop, registry, serving, pipeline):
    _module.register(app)


def main() -> None:
    """Console-script entry point: errors that name bad input are printed without a traceback."""
    import sys

    from duelguard.errors import UserError

    try:
        app()
    except UserError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
