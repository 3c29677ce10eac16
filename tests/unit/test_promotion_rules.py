"""Promotion rules as pure functions: each rule accepts and refuses, with a reason that names it."""

from __future__ import annotations

import pytest

from duelguard.config import Promotion
from duelguard.registry.rules import Decision, VersionMetrics, check_rules

# Every rule written out (the schema has no defaults: params.yaml is their home); tests change a few.
BASE = {"eval_split": "suite", "min_f1_delta": 0.0, "max_lang_regression": 0.02, "max_benign_fpr": 0.3,
        "min_probe_margin": 0.0, "max_fpr_ratio": 1.5, "fpr_slack": 0.02, "load_check": True,
        "guard_sets": ["suite_context"], "max_guard_recall_drop": 0.02, "guard_recall_per_fpr": 0.0}


def promotion(**changes: object) -> Promotion:
    return Promotion(**{**BASE, **changes})


RULES = promotion(eval_split="test", min_f1_delta=0.01, max_lang_regression=0.02, max_benign_fpr=0.2)


def metrics(en: float, fr: float, fpr: float = 0.1, probe: float = 0.0) -> VersionMetrics:
    return VersionMetrics(avg_f1=(en + fr) / 2, f1_by_lang={"en": en, "fr": fr}, benign_fpr=fpr, eval_set_hash="h",
                          probe_avg_f1=probe)


def failed(checks) -> list[str]:
    return [c.rule for c in checks if not c.passed]


def test_better_candidate_is_accepted() -> None:
    checks = check_rules(metrics(0.80, 0.70), metrics(0.78, 0.69), RULES)
    assert failed(checks) == []
    assert {c.rule for c in checks} == {"min_f1_delta", "max_lang_regression[en]", "max_lang_regression[fr]",
                                        "max_benign_fpr", "max_fpr_ratio", "beats_probe"}


def test_too_small_f1_gain_is_refused() -> None:
    checks = check_rules(metrics(0.785, 0.695), metrics(0.78, 0.69), RULES)  # +0.005 < 0.01
    assert failed(checks) == ["min_f1_delta"]
    assert "delta +0.0050" in next(c.detail for c in checks if not c.passed)


def test_gain_exactly_at_the_limit_is_accepted() -> None:
    assert failed(check_rules(metrics(0.79, 0.70), metrics(0.78, 0.69), RULES)) == []


def test_language_regression_is_refused_even_if_average_rises() -> None:
    checks = check_rules(metrics(0.95, 0.60), metrics(0.78, 0.69), RULES)  # fr drops 0.09
    assert failed(checks) == ["max_lang_regression[fr]"]
    assert "fr: F1 0.6900 -> 0.6000" in next(c.detail for c in checks if not c.passed)


def test_language_missing_from_candidate_is_refused() -> None:
    cand = VersionMetrics(0.9, {"en": 0.9}, 0.1, "h", probe_avg_f1=0.5)
    assert "max_lang_regression[fr]" in failed(check_rules(cand, metrics(0.78, 0.69), RULES))


def test_benign_fpr_over_limit_is_refused() -> None:
    checks = check_rules(metrics(0.90, 0.80, fpr=0.35), metrics(0.78, 0.69, fpr=0.3), RULES)  # within the ratio
    assert failed(checks) == ["max_benign_fpr"]
    assert "0.3500" in next(c.detail for c in checks if not c.passed)


def test_first_model_needs_only_the_fpr_and_probe_rules() -> None:
    assert failed(check_rules(metrics(0.1, 0.1, fpr=0.0), None, RULES)) == []
    assert failed(check_rules(metrics(0.9, 0.9, fpr=0.5), None, RULES)) == ["max_benign_fpr"]
    undefined = VersionMetrics(0.5, {"en": 0.5}, None, "h", probe_avg_f1=0.4)
    assert failed(check_rules(undefined, None, RULES)) == ["max_benign_fpr"]


def test_candidate_that_does_not_beat_its_probe_is_refused() -> None:
    rules = promotion(eval_split="suite", min_probe_margin=0.05)
    checks = check_rules(metrics(0.80, 0.70, probe=0.72), None, rules)  # avg 0.75, margin +0.03 < 0.05
    assert failed(checks) == ["beats_probe"]
    assert "vs its probe 0.7200" in next(c.detail for c in checks if not c.passed)
    assert failed(check_rules(metrics(0.80, 0.70, probe=0.70), None, rules)) == []
    no_probe = VersionMetrics(0.75, {"en": 0.75}, 0.1, "h")
    assert failed(check_rules(no_probe, None, rules)) == ["beats_probe"]


def test_probe_figure_round_trips_through_registry_tags() -> None:
    m = metrics(0.8, 0.7, probe=0.61)
    assert VersionMetrics.from_tags(m.to_tags("suite"), "suite") == m


def test_several_failures_are_all_reported() -> None:
    checks = check_rules(metrics(0.50, 0.40, fpr=0.5), metrics(0.78, 0.69), RULES)
    decision = Decision("m", "3", "2", promote=False, checks=checks)
    assert len(decision.reasons) == 5  # F1 delta, both languages, the absolute and the relative FPR rule
    text = decision.describe()
    assert "REFUSE" in text and text.count("FAIL") == 5


@pytest.mark.parametrize("split", ["dev", "test"])
def test_metrics_round_trip_through_version_tags(split: str) -> None:
    m = VersionMetrics(avg_f1=0.123456, f1_by_lang={"en": 0.5, "de": 0.25}, benign_fpr=0.05, eval_set_hash="abc")
    tags = m.to_tags(split)
    assert tags[f"duelguard.eval_set_hash.{split}"] == "abc"
    assert VersionMetrics.from_tags(tags, split) == m
    assert VersionMetrics.from_tags(tags, "dev" if split == "test" else "test") is None


def test_from_summary_reads_the_eval_json_layout() -> None:
    summary = {"avg_f1": 0.6, "f1": 0.7, "fpr": 0.1, "f1_en": 0.8, "f1_fr": None, "fpr_en": 0.2, "n": 10}
    m = VersionMetrics.from_summary(summary, "h")
    assert m == VersionMetrics(0.6, {"en": 0.8}, 0.1, "h", fpr_by_lang={"en": 0.2})


def test_equal_f1_with_six_times_the_champions_fpr_is_refused() -> None:
    """The issue's case: under the absolute ceiling (0.30 <= 0.3) and with equal F1, yet 6x the FPR."""
    rules = promotion(eval_split="suite", max_benign_fpr=0.3, max_fpr_ratio=1.5, fpr_slack=0.02)
    checks = check_rules(metrics(0.80, 0.70, fpr=0.30), metrics(0.80, 0.70, fpr=0.05), rules)
    assert failed(checks) == ["max_fpr_ratio"]
    assert "0.0500 -> 0.3000 (limit champion x 1.5 + 0.02 = 0.0950)" in next(c.detail for c in checks if not c.passed)


def test_relative_fpr_limit_is_inclusive_and_the_slack_covers_a_zero_fpr_champion() -> None:
    rules = promotion(eval_split="suite", max_fpr_ratio=2.0, fpr_slack=0.01)
    assert failed(check_rules(metrics(0.8, 0.7, fpr=0.21), metrics(0.8, 0.7, fpr=0.10), rules)) == []  # exactly 0.21
    assert failed(check_rules(metrics(0.8, 0.7, fpr=0.2101), metrics(0.8, 0.7, fpr=0.10), rules)) == ["max_fpr_ratio"]
    assert failed(check_rules(metrics(0.8, 0.7, fpr=0.01), metrics(0.8, 0.7, fpr=0.0), rules)) == []
    assert failed(check_rules(metrics(0.8, 0.7, fpr=0.02), metrics(0.8, 0.7, fpr=0.0), rules)) == ["max_fpr_ratio"]


def test_relative_fpr_against_a_champion_without_fpr_is_refused_and_first_models_skip_it() -> None:
    champion = VersionMetrics(0.7, {"en": 0.8, "fr": 0.6}, None, "h")
    checks = check_rules(metrics(0.8, 0.7, fpr=0.1), champion, RULES)
    assert failed(checks) == ["max_fpr_ratio"]
    assert "the champion has none" in next(c.detail for c in checks if not c.passed)
    assert "max_fpr_ratio" not in {c.rule for c in check_rules(metrics(0.8, 0.7, fpr=0.25), None, RULES)}


def test_relative_fpr_knobs_come_from_params_yaml(repo_root) -> None:
    from duelguard.config import load_params

    promotion = load_params(repo_root / "params.yaml").promotion
    assert (promotion.max_fpr_ratio, promotion.fpr_slack, promotion.load_check) == (1.5, 0.02, True)
    assert (promotion.max_guard_recall_drop, promotion.guard_recall_per_fpr) == (0.02, 0.5)
    assert load_params(repo_root / "params.yaml", profile="default").promotion.guard_sets == ["suite_context", "suite_cut"]


def suite_metrics(fpr: float, lookalike: float | None, recall: dict[str, float] | None = None,
                  fpr_by_lang: dict[str, float] | None = None) -> VersionMetrics:
    return VersionMetrics(0.75, {"en": 0.8, "fr": 0.7}, fpr, "h", probe_avg_f1=0.5, lookalike_fpr=lookalike,
                          recall_by_lang={"en": 0.9, "fr": 0.9} if recall is None else recall,
                          fpr_by_lang=fpr_by_lang or {})


def test_lookalike_fpr_regression_is_refused_at_an_unchanged_overall_fpr() -> None:
    """Safe questions with alarming words flagged twice as often, the overall benign FPR unchanged."""
    rules = promotion(max_fpr_ratio=1.5, fpr_slack=0.02)
    checks = check_rules(suite_metrics(0.15, 0.40), suite_metrics(0.15, 0.20), rules)
    assert failed(checks) == ["max_fpr_ratio[lookalike]"]
    assert "look-alike FPR 0.2000 -> 0.4000 (limit champion x 1.5 + 0.02 = 0.3200)" in checks[-2].detail
    assert failed(check_rules(suite_metrics(0.15, 0.32), suite_metrics(0.15, 0.20), rules)) == []


def test_lookalike_rule_needs_both_sides_and_skips_a_set_without_lookalikes() -> None:
    checks = check_rules(suite_metrics(0.15, 0.20), suite_metrics(0.15, None), promotion())
    assert failed(checks) == ["max_fpr_ratio[lookalike]"]
    assert "the champion has none" in next(c.detail for c in checks if not c.passed)
    # the seed's test split has no look-alike group: no such check on either side
    assert "max_fpr_ratio[lookalike]" not in {c.rule for c in check_rules(metrics(0.8, 0.7), metrics(0.78, 0.69), RULES)}


def test_guard_set_fpr_regression_is_refused() -> None:
    """The measured case: equal suite figures, in-context FPR 0.17 -> 0.42."""
    rules = promotion()
    same = suite_metrics(0.15, 0.20)
    guards = {"suite_context": (suite_metrics(0.42, None), suite_metrics(0.17, None))}
    checks = check_rules(same, same, rules, guards)
    assert failed(checks) == ["max_fpr_ratio[suite_context]"]
    assert "suite_context benign FPR 0.1700 -> 0.4200 (limit champion x 1.5 + 0.02 = 0.2750)" in next(
        c.detail for c in checks if not c.passed)
    ok = {"suite_context": (suite_metrics(0.27, None), suite_metrics(0.17, None))}
    assert failed(check_rules(same, same, rules, ok)) == []
    unmeasured = {"suite_context": (suite_metrics(0.10, None), None)}
    assert failed(check_rules(same, same, rules, unmeasured)) == ["max_fpr_ratio[suite_context]",
                                                                  "max_guard_recall_drop[suite_context]"]


def test_guard_set_recall_drop_is_refused_per_language() -> None:
    """The measured case: better suite F1, but French requests glued to a cut-off sentence missed."""
    rules = promotion(guard_sets=["suite_cut"], max_guard_recall_drop=0.02)
    same = suite_metrics(0.15, 0.20)
    champion = suite_metrics(0.17, None, {"en": 0.95, "fr": 0.97})
    fail_open = {"suite_cut": (suite_metrics(0.17, None, {"en": 0.96, "fr": 0.94}), champion)}
    checks = check_rules(same, same, rules, fail_open)
    assert failed(checks) == ["max_guard_recall_drop[suite_cut][fr]"]
    assert "suite_cut fr: unsafe recall 0.9700 -> 0.9400 (drop +0.0300, allowed <= 0.0200)" in next(
        c.detail for c in checks if not c.passed)
    within = {"suite_cut": (suite_metrics(0.17, None, {"en": 0.93, "fr": 0.99}), champion)}
    assert failed(check_rules(same, same, rules, within)) == []
    # unmeasured on either side: refused, never skipped
    no_lang = {"suite_cut": (suite_metrics(0.17, None, {"en": 0.99}), champion)}
    assert failed(check_rules(same, same, rules, no_lang)) == ["max_guard_recall_drop[suite_cut][fr]"]
    old_champion = {"suite_cut": (champion, suite_metrics(0.17, None, {}))}
    checks = check_rules(same, same, rules, old_champion)
    assert failed(checks) == ["max_guard_recall_drop[suite_cut]"]
    assert "re-evaluate it on that set" in next(c.detail for c in checks if not c.passed)


def test_recall_given_back_for_false_positives_given_back_is_allowed_at_the_set_rate() -> None:
    """The measured case (fresh demo, suite_context): champion classifier 1 found 88.0% of English requests
    in long text flagging 49.4% of safe ones; classifier 2 found 83.8% flagging 30.9%. Without the
    allowance it is refused; with 0.5 per point given back (18.5 points -> 9.25 more) it passes, but a
    drop the false positives given back do not pay for is still refused, and so is any drop beyond the
    tolerance where the candidate flags as many or more safe texts."""
    same = suite_metrics(0.15, 0.20)
    champion = suite_metrics(0.40, None, {"en": 0.880, "fr": 0.58}, {"en": 0.494, "fr": 0.30})
    candidate = suite_metrics(0.36, None, {"en": 0.838, "fr": 0.60}, {"en": 0.309, "fr": 0.33})
    guards = {"suite_context": (candidate, champion)}
    assert failed(check_rules(same, same, promotion(), guards)) == ["max_guard_recall_drop[suite_context][en]"]
    checks = check_rules(same, same, promotion(guard_recall_per_fpr=0.5), guards)
    assert failed(checks) == []
    assert ("suite_context en: unsafe recall 0.8800 -> 0.8380 (drop +0.0420, allowed <= 0.0200 + 0.5 x benign FPR "
            "given back 0.4940 -> 0.3090 = 0.1125)") in [c.detail for c in checks]
    # the same drop paid by too few false positives given back (0.05 -> 0.0450 allowed)
    thin = suite_metrics(0.36, None, {"en": 0.830, "fr": 0.60}, {"en": 0.444, "fr": 0.33})
    checks = check_rules(same, same, promotion(guard_recall_per_fpr=0.5), {"suite_context": (thin, champion)})
    assert failed(checks) == ["max_guard_recall_drop[suite_context][en]"]
    # French: the candidate flags more safe texts (0.30 -> 0.33): no allowance, the plain tolerance
    worse = suite_metrics(0.36, None, {"en": 0.88, "fr": 0.55}, {"en": 0.30, "fr": 0.33})
    checks = check_rules(same, same, promotion(guard_recall_per_fpr=0.5), {"suite_context": (worse, champion)})
    assert failed(checks) == ["max_guard_recall_drop[suite_context][fr]"]
    assert "allowed <= 0.0200)" in next(c.detail for c in checks if not c.passed)
    # an unmeasured FPR per language (a champion tagged before it was recorded) earns no allowance
    unmeasured = suite_metrics(0.40, None, {"en": 0.880, "fr": 0.58})
    checks = check_rules(same, same, promotion(guard_recall_per_fpr=0.5), {"suite_context": (candidate, unmeasured)})
    assert failed(checks) == ["max_guard_recall_drop[suite_context][en]"]


def test_lookalike_fpr_and_recall_round_trip_through_tags_and_read_from_the_suite_summary() -> None:
    m = suite_metrics(0.15, 0.2083, {"en": 0.875, "fr": 0.5, "de": 1.0}, {"en": 0.25, "de": 0.0})
    assert VersionMetrics.from_tags(m.to_tags("suite"), "suite") == m
    # a neighbouring split's tags (suite_cut's prefix starts like suite's) are not read as suite's
    assert VersionMetrics.from_tags({**m.to_tags("suite"), **suite_metrics(0.3, None, {"es": 0.1}).to_tags("suite_cut")},
                                    "suite") == m
    summary = {"avg_f1": 0.6, "fpr": 0.1, "f1_en": 0.8, "recall": 0.7, "recall_en": 0.75, "recall_fr": None,
               "probe_recall_en": 0.1, "fpr_lookalike": 0.25, "fpr_everyday": 0.0, "fpr_en": 0.125,
               "fpr_lookalike_en": 0.5, "fpr_everyday_fr": 0.0}
    read = VersionMetrics.from_summary(summary, "h")
    assert (read.lookalike_fpr, read.recall_by_lang, read.fpr_by_lang) == (0.25, {"en": 0.75}, {"en": 0.125})


def test_a_guard_set_must_be_evaluated(repo_root) -> None:
    import yaml

    from duelguard.config import ConfigError, resolve

    raw = yaml.safe_load((repo_root / "params.yaml").read_text())
    raw["evaluate"]["sets"] = ["test", "suite"]
    with pytest.raises(ConfigError) as err:
        resolve(raw, profile="default")
    assert str(err.value) == ("params: promotion.guard_sets ['suite_context', 'suite_cut'] must also be in evaluate.sets "
                              "['test', 'suite']: promotion compares the figures evaluate records")
