"""Malformed raw data is an error naming file and line; bad seed params are config errors."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest
import yaml

from duelguard.config import ConfigError, load_params, resolve
from duelguard.fsio import DataError
from duelguard.layout import Layout
from duelguard.seed.assemble import prepare_seed

REPO = Path(__file__).resolve().parents[2]
RAW = REPO.parent / "shared" / "data" / "raw"


def raw_copy_with(tmp_path: Path, rel: str, content: str) -> Path:
    """A raw dir that links every real source except `rel`'s folder, which is copied and then broken."""
    raw = tmp_path / "raw"
    raw.mkdir()
    folder = rel.split("/")[0]
    for item in RAW.iterdir():
        if item.name == folder:
            shutil.copytree(item, raw / item.name)
        else:
            (raw / item.name).symlink_to(item)
    (raw / rel).write_text(content, encoding="utf-8")
    return raw


def run(tmp_path: Path, raw: Path, **seed_updates):
    params = load_params(REPO / "params.yaml", profile="tiny")
    if seed_updates:
        params = params.model_copy(update={"seed": params.seed.model_copy(update=seed_updates)})
    layout = dataclasses.replace(Layout.from_params(params, root=tmp_path / "out"), raw_data=raw)
    return prepare_seed(params, layout), layout


def test_broken_csv_row_names_file_and_line(tmp_path: Path) -> None:
    raw = raw_copy_with(
        tmp_path,
        "davidson/labeled_data.csv",
        ",count,hate_speech,offensive_language,neither,class,tweet\n"
        "0,3,0,0,3,2,a perfectly fine tweet\n"
        '1,3,0,0,3,2,"a tweet with a quoted\nnewline inside"\n'
        "2,3,0,0,3,this row has too few fields\n",
    )
    with pytest.raises(DataError, match=r"davidson/labeled_data\.csv:5: expected 7 fields"):
        run(tmp_path, raw)


def test_broken_tsv_line_names_file_and_line(tmp_path: Path) -> None:
    raw = raw_copy_with(tmp_path, "germeval2018/germeval2018.test.txt",
                        "Ein Tweet\tOTHER\tOTHER\nkaputt ohne Labels\n")
    with pytest.raises(DataError, match=r"germeval2018/germeval2018\.test\.txt:2: expected 3 tab-separated"):
        run(tmp_path, raw)


def test_empty_text_is_an_error_not_a_silent_drop(tmp_path: Path) -> None:
    raw = raw_copy_with(tmp_path, "simplesafetytests/simplesafetytests_cases.csv",
                        "id,harm_area,counter,category,prompts_final\nsst_1,Scams and fraud,1,x,\n")
    with pytest.raises(DataError, match=r"simplesafetytests_cases\.csv:2: empty or missing text"):
        run(tmp_path, raw)


def test_broken_json_names_file(tmp_path: Path) -> None:
    raw = raw_copy_with(tmp_path, "refusal_direction/harmful_val.json", '[{"instruction": "x", "category": null},\n')
    with pytest.raises(DataError, match=r"refusal_direction/harmful_val\.json:\d+: not valid JSON"):
        run(tmp_path, raw)


def test_missing_raw_dir_and_bad_params(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="raw data folder not found"):
        run(tmp_path, tmp_path / "nowhere")
    with pytest.raises(ConfigError, match="seed.quotas: every quota is zero"):
        run(tmp_path, RAW, quotas={})
    raw_params = yaml.safe_load((REPO / "params.yaml").read_text())
    raw_params["seed"]["quotas"]["it"] = {"statement": {"unsafe": 1, "benign": 1}}
    with pytest.raises(ConfigError, match=r"quotas for language\(s\) \['it'\] not listed in seed.languages"):
        resolve(raw_params)
