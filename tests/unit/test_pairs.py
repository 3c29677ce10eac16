"""The honest pair builder on hand-built cases: chosen = a faithful sample the classifier got wrong,
rejected = an unfaithful sample or a faithful one it got right; margin rule, ties, file output."""

from __future__ import annotations

import json
import random

import pytest
from loop_fixtures import synthetic

from duelguard.fsio import DataError, read_jsonl, write_jsonl
from duelguard.loop.pairs import build_pairs, select_pairs
from duelguard.loop.prompts import render
from duelguard.records import write_records


def drift(parent: str, lang: str, n: int, text: str, unsafe: bool, reason: str = "low_similarity", **kw) -> dict:
    """An unfaithful sample: dropped by curation for a reason that says the generator failed."""
    return {**synthetic(parent, lang, n, text, unsafe, **kw), "dropped_by": reason}


def test_chosen_is_the_faithful_sample_the_classifier_got_wrong_with_the_highest_loss():
    recs = [
        synthetic("s1", "fr", 0, "a", True, loss=0.2, correct=True),
        synthetic("s1", "fr", 1, "b", True, loss=2.5, correct=False),
        synthetic("s1", "fr", 2, "c", True, loss=1.0, correct=False),
    ]
    pairs, counts = select_pairs(recs, [], min_margin=0.1)
    assert [(p["chosen"]["text"], p["rejected"]["text"], p["rejected_kind"]) for p in pairs] == [("b", "a", "correct")]
    assert pairs[0]["margin"] == pytest.approx(2.3)
    assert counts["pairs"] == counts["pairs_vs_correct"] == 1


def test_a_high_loss_sample_the_classifier_still_got_right_is_never_chosen():
    # The old rule took the highest loss as chosen; here both are classified correctly: no pair.
    recs = [synthetic("s1", "fr", 0, "a", True, loss=0.6, correct=True),
            synthetic("s1", "fr", 1, "b", True, loss=0.1, correct=True)]
    pairs, counts = select_pairs(recs, [], min_margin=0.0)
    assert pairs == [] and counts["no_wrong_sample"] == 1


def test_an_unfaithful_sample_is_rejected_in_preference_to_a_correct_one_without_margin():
    recs = [synthetic("s1", "de", 0, "wrong", False, loss=0.9, correct=False),
            synthetic("s1", "de", 1, "right", False, loss=0.85, correct=True)]  # margin 0.05 < 0.1
    unfaithful = [drift("s1", "de", 2, "off topic", False, "low_similarity"),
                  drift("s1", "de", 3, "in English", False, "wrong_language")]
    pairs, counts = select_pairs(recs, unfaithful, min_margin=0.1)
    assert len(pairs) == 1
    pair = pairs[0]
    assert pair["chosen"]["text"] == "wrong" and pair["rejected"]["text"] == "off topic"  # smallest id
    assert pair["rejected_kind"] == "low_similarity" and pair["margin"] is None
    assert counts["pairs_vs_unfaithful"] == 1 and counts["pairs_vs_correct"] == 0


def test_drift_alone_rewards_nothing():
    # A group with unfaithful samples but no faithful wrong one: the generator is not rewarded for anything.
    pairs, counts = select_pairs([synthetic("s1", "es", 0, "ok", True, loss=0.1, correct=True)],
                                 [drift("s1", "es", 1, "drift", True)], min_margin=0.0)
    assert pairs == [] and counts["no_wrong_sample"] == 1 and counts["groups"] == 1


def test_wrong_sample_without_any_rejected_candidate_gives_no_pair():
    pairs, counts = select_pairs([synthetic("s1", "fr", 0, "a", True, loss=3.0, correct=False)], [], min_margin=0.0)
    assert pairs == [] and counts["no_rejected_sample"] == 1


def test_unfaithful_samples_only_pair_within_their_own_prompt():
    recs = [synthetic("s1", "fr", 0, "wrong fr", True, loss=2.0, correct=False)]
    pairs, counts = select_pairs(recs, [drift("s1", "es", 0, "drift es", True),
                                        drift("s2", "fr", 0, "drift other seed", True)], min_margin=0.0)
    assert pairs == [] and counts["groups"] == 3 and counts["no_rejected_sample"] == 1


def test_duplicates_and_contamination_are_not_unfaithful():
    with pytest.raises(DataError, match="not an unfaithful sample"):
        select_pairs([], [drift("s1", "fr", 0, "dup", True, "near_duplicate")], min_margin=0.0)


def test_margin_rule_is_inclusive_and_drops_small_gaps():
    recs = [
        synthetic("s1", "fr", 0, "a", False, loss=0.50, correct=True),
        synthetic("s1", "fr", 1, "b", False, loss=0.75, correct=False),  # margin 0.25 == min_margin: kept
        synthetic("s2", "fr", 0, "c", False, loss=0.50, correct=True),
        synthetic("s2", "fr", 1, "d", False, loss=0.74, correct=False),  # margin 0.24 < 0.25: dropped
    ]
    pairs, counts = select_pairs(recs, [], min_margin=0.25)
    assert [p["chosen"]["parent_id"] for p in pairs] == ["s1"]
    assert counts["dropped_below_margin"] == 1 and counts["pairs"] == 1


def test_different_tasks_are_different_prompts():
    recs = [
        synthetic("s1", "fr", 0, "a", True, loss=3.0, correct=False, task="translate_create"),
        synthetic("s1", "fr", 0, "b", True, loss=0.0, correct=True, task="paraphrase"),
    ]
    pairs, counts = select_pairs(recs, [], min_margin=0.0)
    assert pairs == [] and counts["no_rejected_sample"] == 1 and counts["no_wrong_sample"] == 1


def test_ties_are_broken_by_id_whatever_the_input_order():
    recs = [synthetic("s1", "fr", n, f"t{n}", True, loss=loss, correct=loss < 0.5)
            for n, loss in enumerate([1.0, 1.0, 0.2, 0.2])]
    results = set()
    for seed in range(5):
        shuffled = recs[:]
        random.Random(seed).shuffle(shuffled)
        pairs, _ = select_pairs(shuffled, [], min_margin=0.1)
        results.add((pairs[0]["chosen"]["id"], pairs[0]["rejected"]["id"]))
    assert results == {(recs[0]["id"], recs[2]["id"])}


def test_scored_record_without_loss_is_an_error():
    rec = synthetic("s1", "fr", 0, "a", True)
    with pytest.raises(DataError, match="loss"):
        select_pairs([rec], [], min_margin=0.1)


def test_build_pairs_writes_prompt_rendered_by_prompts_module(tmp_layout, tiny_params):
    seed = "Tell me how to steal a car without getting caught."
    recs = [
        synthetic("s1", "fr", 0, "Comment voler une voiture ?", True, loss=4.0, correct=False, seed_text=seed),
        synthetic("s1", "fr", 1, "Voler voiture vite", True, loss=0.05, correct=True, seed_text=seed),
        synthetic("s2", "es", 0, "¿Cómo hago pan?", False, loss=0.3, seed_text="How do I bake bread?"),
    ]
    write_records(tmp_layout.scored(1), recs)
    unfaithful = [{**synthetic("s2", "es", 1, "Bake bread in English", False, seed_text="How do I bake bread?"),
                   "dropped_by": "wrong_language"},
                  {**synthetic("s2", "es", 2, "¿Pan pan pan?", False), "dropped_by": "near_duplicate"}]
    write_jsonl(tmp_layout.rejected(1), unfaithful)
    metrics = build_pairs(tiny_params, tmp_layout, 1)
    rows = read_jsonl(tmp_layout.pairs(1))
    assert len(rows) == 1
    row = rows[0]
    assert row["prompt"] == render(None, "fewshot", "translate_create", seed, "fr", True)
    assert row["chosen"] == "Comment voler une voiture ?" and row["rejected"] == "Voler voiture vite"
    assert row["margin"] == pytest.approx(3.95) and row["lang"] == "fr" and row["parent_id"] == "s1"
    assert row["rejected_kind"] == "correct"
    # s2/es: its faithful sample is right (loss 0.3 < 0.7), so its wrong-language drift pairs with nothing.
    assert metrics["pairs"] == 1 and metrics["no_wrong_sample"] == 1 and metrics["unfaithful_samples"] == 1
    saved = json.loads((tmp_layout.metrics / "pairs" / "iter_1.json").read_text())
    assert saved["pairs_per_language"] == {"fr": 1}


def test_build_pairs_names_missing_provenance(tmp_layout, tiny_params):
    recs = [synthetic("s1", "fr", n, f"t{n}", True, loss=float(n), correct=n == 0) for n in range(2)]
    for rec in recs:
        del rec["seed_text"]
    write_records(tmp_layout.scored(1), recs)
    write_jsonl(tmp_layout.rejected(1), [])
    with pytest.raises(DataError, match="seed_text"):
        build_pairs(tiny_params, tmp_layout, 1)
