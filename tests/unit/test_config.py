"""params.yaml validation and profile resolution."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from duelguard.config import ConfigError, load_params, resolve, set_profile


def _raw(repo_root: Path) -> dict:
    return yaml.safe_load((repo_root / "params.yaml").read_text())


def test_repository_params_validate_for_every_profile(repo_root: Path) -> None:
    kinds = {name: load_params(repo_root / "params.yaml", profile=name).classifier.backbone.kind
             for name in ("default", "tiny", "paper")}
    assert kinds == {"default": "gguf", "tiny": "tiny", "paper": "hf"}


def test_profile_overrides_are_deep_merged(repo_root: Path) -> None:
    tiny = load_params(repo_root / "params.yaml", profile="tiny")
    default = load_params(repo_root / "params.yaml", profile="default")
    assert tiny.classifier.max_length == 64
    # keys the tiny profile does not override keep the top-level value
    assert tiny.classifier.loss == default.classifier.loss
    assert tiny.tracking == default.tracking


def test_unknown_key_is_an_error_that_names_it(repo_root: Path) -> None:
    raw = _raw(repo_root)
    raw["classifier"]["learning_rat"] = 1e-4
    with pytest.raises(ConfigError, match=r"classifier\.learning_rat: unknown key"):
        resolve(raw, "default")


def test_mistyped_value_is_an_error_that_names_it(repo_root: Path) -> None:
    raw = _raw(repo_root)
    raw["loop"]["iterations"] = "two"
    with pytest.raises(ConfigError, match=r"loop\.iterations"):
        resolve(raw, "default")


def test_bad_key_inside_a_profile_names_the_profile(repo_root: Path) -> None:
    raw = _raw(repo_root)
    raw["profiles"]["tiny"]["generator"]["n_sample"] = 3
    with pytest.raises(ConfigError, match=r"profiles\.tiny\.generator\.n_sample: unknown key"):
        resolve(raw, "tiny")


def test_unknown_profile(repo_root: Path) -> None:
    with pytest.raises(ConfigError, match="unknown profile 'huge'"):
        resolve(_raw(repo_root), "huge")


def test_set_profile_rewrites_only_the_profile_line(tmp_path: Path, repo_root: Path, monkeypatch) -> None:
    monkeypatch.delenv("DUELGUARD_PROFILE", raising=False)
    params = tmp_path / "params.yaml"
    params.write_text((repo_root / "params.yaml").read_text())
    set_profile(params, "paper")
    assert load_params(params).profile == "paper"
    original = (repo_root / "params.yaml").read_text().splitlines()
    changed = params.read_text().splitlines()
    assert [a for a, b in zip(original, changed) if a != b] == ["profile: default"]
    with pytest.raises(ConfigError):
        set_profile(params, "nonexistent")
    assert load_params(params).profile == "paper"
