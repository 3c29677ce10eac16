"""Helpers shared by the CLI command modules."""

from __future__ import annotations

from typing import Any

import typer


def context_params(ctx: typer.Context) -> tuple[Any, Any]:
    """(Params, Layout) for this invocation, from the global --params/--profile/--root options."""
    from duelguard.config import load_params
    from duelguard.layout import Layout

    obj = ctx.obj or {}
    params = load_params(obj.get("params_path"), obj.get("profile"))
    return params, Layout.from_params(params, obj.get("root") or ".")
