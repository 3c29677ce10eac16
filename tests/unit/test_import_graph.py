"""The library's module layering: no import cycle between modules, a shallow stack of levels, and
docs/architecture.md drawn from the imports as they are (duelguard.pipeline.codedeps)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from duelguard.pipeline import codedeps

REPO = Path(__file__).resolve().parents[2]
MAX_LEVELS = 10


def _architecture_tool():
    spec = importlib.util.spec_from_file_location("architecture_tool", REPO / "tools" / "architecture.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_levels_count_the_modules_on_the_longest_import_path():
    assert codedeps.levels({"a": {"b", "c"}, "b": {"c"}, "c": set(), "d": set()}) == {"a": 3, "b": 2, "c": 1, "d": 1}
    with pytest.raises(ValueError, match="cycle"):
        codedeps.levels({"a": {"b"}, "b": {"a"}})


def test_the_module_graph_counts_function_level_imports(tmp_path):
    pkg = tmp_path / "duelguard"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "low.py").write_text("def f():\n    from duelguard import high\n")
    (pkg / "high.py").write_text("from duelguard.low import f\n")
    graph = codedeps.module_graph(pkg)
    assert graph == {"duelguard.low": {"duelguard.high"}, "duelguard.high": {"duelguard.low"}}
    assert codedeps.cycles(graph) == [["duelguard.high", "duelguard.low"]]


def test_the_library_has_no_import_cycles_between_its_modules_and_at_most_ten_levels():
    graph = codedeps.module_graph()
    assert {"duelguard.classifier.model", "duelguard.classifier.sentence", "duelguard.cli"} <= set(graph)
    assert codedeps.cycles(graph) == []
    level = codedeps.levels(graph)
    assert max(level.values()) <= MAX_LEVELS, sorted(level.items(), key=lambda kv: -kv[1])[:5]


def test_architecture_doc_shows_the_layering_the_imports_have():
    tool = _architecture_tool()
    text = tool.DOC.read_text(encoding="utf-8")
    assert tool.committed(text) == tool.render(), "run `python tools/architecture.py --write`"
    assert tool.committed(tool.with_section(text, "x\n")) == "x\n"
