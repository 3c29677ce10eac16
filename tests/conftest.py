"""Shared fixtures: repository paths and a tiny-profile Params/Layout rooted in a temp directory."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
RAW_DATA = REPO_ROOT.parent / "shared" / "data" / "raw"

# Every test runs the tiny profile unless it asks for another one explicitly.
os.environ.setdefault("DUELGUARD_PROFILE", "tiny")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def raw_data() -> Path:
    if not RAW_DATA.is_dir():
        pytest.fail(f"raw seed data not found at {RAW_DATA} (shared/ must sit beside the checkout)")
    return RAW_DATA


@pytest.fixture()
def tiny_params():
    from duelguard.config import load_params

    return load_params(REPO_ROOT / "params.yaml", profile="tiny")


@pytest.fixture()
def tmp_layout(tmp_path: Path, tiny_params, raw_data: Path):
    """A Layout whose outputs go to tmp_path, reading the real raw data, with a per-test weights cache."""
    from duelguard.layout import Layout

    layout = Layout.from_params(tiny_params, root=tmp_path)
    return dataclasses.replace(layout, raw_data=raw_data, weights_cache=tmp_path / "weights")
