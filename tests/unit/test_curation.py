"""Curation: each filter on hand-made samples, the fixed order, counts that add up, dedup across
iterations and against the seed, decontamination against dev/test, the fidelity filters (real USE-m
encoder, a real probe as the frozen judge), the game set, the human-readable sample, and the stage's resume."""

from __future__ import annotations

import json

import pytest
from loop_fixtures import write_judge

from duelguard.loop import curation
from duelguard.fsio import DataError
from duelguard.records import read_records, write_records
from duelguard.taxonomy import labels_from

SEED_EN = "How do I bake bread at home without a bread machine?"
DEV_TEXT = "Les femmes ne devraient jamais avoir le droit de voter aux élections."
TEST_TEXT = "Écris un plan détaillé pour une fête d'anniversaire avec des jeux pour dix enfants dans le jardin."


def seed_rec(i: int, lang: str, text: str, split: str, cats: tuple[str, ...] = ()) -> dict:
    return {
        "id": f"seed-{split}-{i}",
        "text": text,
        "lang": lang,
        "labels": labels_from(list(cats)),
        "source": "handmade",
        "split": split,
        "origin": "seed",
        "iteration": 0,
        "parent_id": None,
    }


def sample(n: int, lang: str, text: str, seed_text: str = SEED_EN, iteration: int = 1, task: str = "translate_create",
           cats: tuple[str, ...] = (), parent: str = "seed-train-0") -> dict:
    return {
        "id": f"{parent}-i{iteration}-{lang}-{task}-{n}",
        "text": text,
        "lang": lang,
        "labels": labels_from(list(cats)),
        "source": "synthetic",
        "split": "train",
        "origin": "synthetic",
        "iteration": iteration,
        "parent_id": parent,
        "task": task,
        "template": "fewshot",
        "generator": "tiny-gemma3:base",
        "sample_index": n,
        "seed_text": seed_text,
        "seed_lang": "en",
    }


@pytest.fixture()
def layout(tmp_layout):
    write_records(
        tmp_layout.seed_split("train"),
        [
            seed_rec(0, "en", SEED_EN, "train"),
            seed_rec(1, "fr", "Comment puis-je faire du pain maison sans machine à pain ?", "train"),
        ],
    )
    write_records(tmp_layout.seed_split("dev"), [seed_rec(0, "fr", DEV_TEXT, "dev", ("hate",))])
    write_records(tmp_layout.seed_split("test"), [seed_rec(0, "fr", TEST_TEXT, "test")])
    write_judge(tmp_layout)
    return tmp_layout


def with_curation(params, **changes):
    return params.model_copy(update={"curation": params.curation.model_copy(update=changes)})


@pytest.fixture()
def tiny_params(tiny_params):
    """The hand-written translations below sit at USE-m similarity 0.58-0.74 to SEED_EN (the faithful
    French one at 0.58), the off-topic one at 0.20: these tests fix their own threshold between them,
    since what they check is the filters' mechanics, not the default calibrated on real generator
    samples (README, "Generator choice")."""
    return with_curation(tiny_params, min_similarity=0.5)


def run_filters(params, layout, samples, earlier=(), fidelity_checks: bool = False):
    """Filters 1-9 alone unless fidelity_checks (the fidelity filters' thresholds then let everything by)."""
    if not fidelity_checks:
        params = with_curation(params, min_similarity=-1.0, max_label_contradiction=1.0)
    seed = [r for s in ("train", "dev", "test") for r in read_records(layout.seed_split(s))]
    ref = curation.build_reference(
        params,
        seed_texts=[r["text"] for r in seed],
        earlier_texts=list(earlier),
        eval_texts=[r["text"] for r in seed if r["split"] != "train"],
    )
    fidelity = curation.fidelity_scores(samples, curation.load_judge(layout), layout.weights_cache)
    kept, dropped = curation.apply_filters(params, samples, ref, fidelity)
    return [r["text"] for r in kept], {r["text"]: reason for r, reason in dropped}


GOOD_FR = "Comment faire du bon pain chez moi sans machine à pain ?"


def test_good_samples_survive_with_labels_provenance_and_confidence(tiny_params, layout):
    samples = [
        sample(0, "fr", GOOD_FR),
        sample(1, "es", "¿Cómo puedo hacer pan casero sin tener una panificadora?"),
        sample(2, "de", "Wie backe ich zu Hause Brot ganz ohne Brotbackautomat?"),
    ]
    kept, dropped = run_filters(tiny_params, layout, samples, fidelity_checks=True)
    assert dropped == {} and len(kept) == 3
    ref = curation.build_reference(tiny_params, [], [], [])
    fidelity = curation.fidelity_scores(samples[:1], curation.load_judge(layout), layout.weights_cache)
    out, _ = curation.apply_filters(tiny_params, samples[:1], ref, fidelity)
    assert out[0]["labels"] == samples[0]["labels"] and out[0]["parent_id"] == "seed-train-0"
    assert out[0]["template"] == "fewshot" and 0.5 < out[0]["langid_confidence"] <= 1.0
    assert out[0]["similarity"] >= tiny_params.curation.min_similarity and 0.0 < out[0]["probe_unsafe"] < 0.5


def test_too_short(tiny_params, layout):
    assert run_filters(tiny_params, layout, [sample(0, "fr", "Pain ?")])[1] == {"Pain ?": "too_short"}


def test_langid_catches_english_text_labelled_french(tiny_params, layout):
    text = "How can I bake bread at home if I have no machine?"
    assert run_filters(tiny_params, layout, [sample(0, "fr", text)])[1] == {text: "wrong_language"}
    # Right language, but below a confidence floor:
    strict = tiny_params.model_copy(update={"curation": tiny_params.curation.model_copy(update={"langid_min_confidence": 1.01})})
    assert run_filters(strict, layout, [sample(0, "fr", GOOD_FR)])[1] == {GOOD_FR: "wrong_language"}


def test_length_ratio_to_the_seed(tiny_params, layout):
    short = "Du pain maison ?"  # 16 chars for a 52-char seed: ratio 0.31 passes, shorter fails
    tiny = "Le pain ?"
    long = " ".join(["Comment faire du pain maison, avec quelle farine, quelle levure et quel four ?"] * 3)
    kept, dropped = run_filters(tiny_params, layout, [sample(0, "fr", short), sample(1, "fr", tiny), sample(2, "fr", long)])
    assert kept == [short]
    assert dropped == {tiny: "length_ratio", long: "length_ratio"}


def test_echo_of_the_seed_in_a_paraphrase(tiny_params, layout):
    seed_fr = "Comment puis-je faire du pain maison sans machine à pain ?"
    echo = "Comment puis-je faire du pain maison sans une machine à pain ?"
    rewrite = "Quelle est la meilleure façon de préparer du pain chez soi, à la main ?"
    samples = [sample(0, "fr", echo, seed_fr, task="paraphrase"), sample(1, "fr", rewrite, seed_fr, task="paraphrase")]
    kept, dropped = run_filters(tiny_params, layout, samples)
    assert kept == [rewrite] and dropped == {echo: "echo"}
    assert curation.echo_similarity(echo, seed_fr) >= tiny_params.curation.echo_similarity


@pytest.mark.parametrize(
    ("lang", "text"),
    [
        ("en", "I'm sorry, but I can't help with baking bread without a machine."),
        ("fr", "Je suis désolé, mais je ne peux pas vous aider à faire du pain."),
        ("es", "Lo siento, pero no puedo ayudarte a hacer pan en casa sin máquina."),
        ("de", "Es tut mir leid, aber ich kann dir nicht helfen, Brot zu backen."),
        ("fr", "En tant qu'IA, je ne donne pas de recettes de pain maison."),
    ],
)
def test_refusals_in_four_languages(tiny_params, layout, lang, text):
    assert run_filters(tiny_params, layout, [sample(0, lang, text)])[1] == {text: "refusal"}


@pytest.mark.parametrize(
    ("lang", "text"),
    [
        ("en", "Sure, here is a simple recipe for bread made at home by hand."),
        ("fr", "Voici une recette simple de pain maison faite à la main."),
        ("es", "Claro, aquí tienes una receta sencilla de pan casero a mano."),
        ("de", "Hier ist ein einfaches Rezept für selbst gebackenes Brot."),
    ],
)
def test_answers_instead_of_prompts(tiny_params, layout, lang, text):
    assert run_filters(tiny_params, layout, [sample(0, lang, text)])[1] == {text: "answer"}


def test_legitimate_prompts_that_mention_inability_are_kept():
    for text in ("Ich kann nicht schlafen, was soll ich tun?", "No puedo dormir por las noches, ¿qué hago?",
                 "I can't sleep at night, what should I do?", "Je ne peux pas dormir, que faire ?"):
        assert not curation.is_refusal(text) and not curation.is_answer(text)


def test_exact_and_near_duplicates_within_batch_earlier_iterations_and_seed(tiny_params, layout):
    earlier = "Quelle farine choisir pour faire du pain maison sans machine ?"
    near_earlier = "Quelle farine choisir pour faire du pain maison sans machine ?!  Merci"
    exact_earlier = "quelle FARINE choisir pour faire du pain maison, sans machine"
    seed_copy = "Comment puis-je faire du pain maison sans machine à pain"  # the fr seed, punctuation dropped
    first = "Faut-il pétrir longtemps la pâte pour un pain maison réussi ?"
    samples = [sample(i, "fr", t) for i, t in enumerate([near_earlier, exact_earlier, seed_copy, first, first + " "])]
    kept, dropped = run_filters(tiny_params, layout, samples, earlier=[earlier])
    assert kept == [first]
    assert dropped == {
        near_earlier: "near_duplicate",
        exact_earlier: "exact_duplicate",
        seed_copy: "exact_duplicate",
        first + " ": "exact_duplicate",  # the second copy within the batch
    }


def test_decontamination_against_dev_and_test_ngrams(tiny_params, layout):
    # Shares an 8-word run with the test record, but is not a near duplicate of it as a whole.
    leak = "Bonjour ! Écris un plan détaillé pour une fête d'anniversaire, merci beaucoup."
    exact_dev = DEV_TEXT.upper()
    kept, dropped = run_filters(tiny_params, layout, [sample(0, "fr", leak, TEST_TEXT[:60]), sample(1, "fr", exact_dev)])
    assert kept == [] and dropped == {leak: "contaminated", exact_dev: "exact_duplicate"}


def test_filter_order_decides_the_count(tiny_params, layout):
    # English AND a refusal: counted once, under the earlier filter (wrong_language).
    text = "I'm sorry, but I can't help with that request about bread."
    assert run_filters(tiny_params, layout, [sample(0, "fr", text)])[1] == {text: "wrong_language"}
    assert curation.FILTERS.index("wrong_language") < curation.FILTERS.index("refusal")


def test_curate_stage_counts_add_up_and_dedups_across_iterations(tiny_params, layout):
    tiny_params = with_curation(tiny_params, game_set_per_language=0)
    iter1 = [
        sample(0, "fr", GOOD_FR),
        sample(1, "fr", "Bake bread at home without any machine, how?"),  # English labelled fr
        sample(2, "es", "¿Cómo puedo hacer pan casero sin tener una panificadora?"),
        sample(3, "de", "Nein."),
    ]
    write_records(layout.generated(1), iter1)
    summary = curation.curate(tiny_params, layout, 1)
    assert summary["input"] == 4 and summary["kept"] == 2
    assert summary["input"] == summary["kept"] + sum(summary["dropped"].values())
    assert summary["dropped"]["wrong_language"] == 1 and summary["dropped"]["too_short"] == 1
    per_lang = summary["per_language"]
    assert per_lang["fr"]["input"] == 2 and per_lang["fr"]["kept"] == 1 and per_lang["de"]["survival_rate"] == 0.0
    for block in per_lang.values():
        assert block["input"] == block["kept"] + sum(block["dropped"].values())
    on_disk = json.loads(layout.curation_report(1).read_text())
    assert on_disk["dropped"] == summary["dropped"] and on_disk["filter_order"] == list(curation.FILTERS)
    assert [r["text"] for r in read_records(layout.curated(1))] == [GOOD_FR, iter1[2]["text"]]
    rejected = [json.loads(line) for line in layout.rejected(1).read_text().splitlines()]
    assert sorted(r["dropped_by"] for r in rejected) == ["too_short", "wrong_language"]
    assert all(isinstance(r["similarity"], float) for r in rejected), "dropped rows keep their fidelity scores"

    # Iteration 2 repeats an iteration-1 survivor: dropped as a duplicate across iterations.
    write_records(layout.generated(2), [sample(0, "fr", GOOD_FR.lower(), iteration=2)])
    second = curation.curate(tiny_params, layout, 2)
    assert second["kept"] == 0 and second["dropped"]["exact_duplicate"] == 1


def test_curate_needs_the_earlier_iterations(tiny_params, layout):
    write_records(layout.generated(2), [sample(0, "fr", GOOD_FR, iteration=2)])
    with pytest.raises(DataError, match="iter_1/curated.jsonl: earlier iteration not curated"):
        curation.curate(tiny_params, layout, 2)


BREAD_FR = "Comment faire du bon pain chez moi sans machine à pain ?"
CAR_FR = "Quelle est la meilleure voiture électrique pour un long trajet ?"  # says something else


def test_low_similarity_drops_a_sample_that_talks_about_something_else(tiny_params, layout):
    kept, dropped = run_filters(tiny_params, layout, [sample(0, "fr", BREAD_FR), sample(1, "fr", CAR_FR)],
                                fidelity_checks=True)
    assert kept == [BREAD_FR] and dropped == {CAR_FR: "low_similarity"}


def test_label_contradiction_uses_the_frozen_judge_both_ways(tiny_params, layout):
    bomb = "Comment fabriquer une bombe artisanale ?"
    poem = "Écris-moi un petit poème sur la mer, s'il te plaît."
    params = with_curation(tiny_params, min_similarity=-1.0, max_label_contradiction=0.6)
    samples = [
        sample(0, "fr", bomb, "Explain how to build a pipe bomb step by step.", cats=("indiscriminate_weapons",)),
        sample(1, "fr", poem, "Explain how to build a pipe bomb step by step.", cats=("indiscriminate_weapons",)),
        sample(2, "fr", "Explique-moi comment fabriquer une bombe artisanale.", "Write a poem about the ocean.",
               parent="seed-train-9"),  # labelled safe
    ]
    judge = curation.load_judge(layout)
    fid = curation.fidelity_scores(samples, judge, layout.weights_cache)
    # What the judge thinks of each text:
    assert fid[0].probe_unsafe > 0.6 and fid[1].probe_unsafe < 0.4 and fid[2].probe_unsafe > 0.6
    ref = curation.build_reference(params, [], [], [])
    kept, dropped = curation.apply_filters(params, samples, ref, fid)
    assert [r["id"] for r in kept] == [samples[0]["id"]]
    assert sorted((r["id"], why) for r, why in dropped) == [(samples[1]["id"], "label_contradiction"),
                                                            (samples[2]["id"], "label_contradiction")]


def test_fidelity_filters_come_after_the_others(tiny_params, layout):
    # An English text labelled fr that is also off-topic: counted once, as wrong_language.
    text = "What is the best electric car for a long trip?"
    assert run_filters(tiny_params, layout, [sample(0, "fr", text)], fidelity_checks=True)[1] == {text: "wrong_language"}
    assert curation.FILTERS[-len(curation.FIDELITY_FILTERS):] == curation.FIDELITY_FILTERS
    assert set(curation.FIDELITY_FILTERS) <= set(curation.UNFAITHFUL)
    assert not {"exact_duplicate", "near_duplicate", "contaminated"} & set(curation.UNFAITHFUL)


def test_missing_judge_is_a_clear_error(tiny_params, layout):
    import shutil

    from duelguard.errors import ModelNotFoundError

    shutil.rmtree(layout.probe_dir(0))
    write_records(layout.generated(1), [sample(0, "fr", BREAD_FR)])
    with pytest.raises(DataError, match="classifier/iter_0/probe/probe.json: file not found"):
        curation.curate(tiny_params, layout, 1)
    with pytest.raises(ModelNotFoundError, match="not a saved probe"):
        curation.load_judge(layout)


def _game_candidates() -> list[dict]:
    rows = []
    for lang in ("fr", "es"):
        for k in range(6):
            cats = ("violent_crimes",) if k % 2 else ()
            rows.append(sample(k, lang, f"{lang} text {k}", parent=f"seed-{k // 2}", cats=cats))
    return rows


def test_game_set_is_balanced_one_per_seed_and_independent_of_order():
    rows = _game_candidates()
    picked = curation.select_game_set(rows, per_language=2)
    assert sorted(r["lang"] for r in picked) == ["es", "es", "fr", "fr"]
    for lang in ("fr", "es"):
        mine = [r for r in picked if r["lang"] == lang]
        assert sorted(bool(any(r["labels"])) for r in mine) == [False, True]
    assert curation.select_game_set(list(reversed(rows)), per_language=2) == picked
    # Three seeds per language: at most three samples, one per seed, whatever is asked for.
    big = curation.select_game_set(rows, per_language=10)
    assert sum(r["lang"] == "fr" for r in big) == 3
    assert len({(r["lang"], r["parent_id"]) for r in big}) == len(big)


def test_curate_holds_the_game_set_out_at_iteration_one_and_reuses_it(tiny_params, layout):
    params = with_curation(tiny_params, game_set_per_language=1)
    iter1 = [
        sample(0, "fr", BREAD_FR),
        sample(1, "fr", "Quelle farine faut-il pour faire son pain maison sans machine ?"),
        sample(2, "es", "¿Cómo puedo hacer pan casero sin tener una panificadora?"),
        sample(3, "fr", CAR_FR),
    ]
    write_records(layout.generated(1), iter1)
    report = curation.curate(params, layout, 1)
    game = read_records(layout.game_set(1))
    curated = read_records(layout.curated(1))
    assert report["kept"] == 3 and report["dropped"]["low_similarity"] == 1
    assert report["per_language"]["fr"]["dropped"]["low_similarity"] == 1
    assert report["game_set"]["n"] == len(game) == 2 and report["game_set"]["per_language"] == {"es": 1, "fr": 1}
    assert report["curated"] == len(curated) == 1
    assert not {r["id"] for r in game} & {r["id"] for r in curated}, "the game set is never trained on"
    assert report["fidelity"]["similarity"]["n"] == 4 and report["fidelity"]["per_language"]["fr"]["similarity"]

    md = layout.fidelity_sample(1).read_text()
    assert "## fr" in md and "### kept (2)" in md and "### dropped by a fidelity filter (1)" in md
    assert CAR_FR in md and "low_similarity" in md and SEED_EN in md

    write_records(layout.generated(2), [sample(0, "de", "Wie backe ich zu Hause Brot ganz ohne Brotbackautomat?",
                                               iteration=2)])
    second = curation.curate(params, layout, 2)
    assert read_records(layout.game_set(2)) == game
    assert second["curated"] == 1 and second["game_set"]["held_out_here"] == 0


def test_lost_details_quoted_words_and_numbers_must_survive(tiny_params, layout):
    seed = 'Construct a true sentence with the words "rat", "hat", and "mat" in 3.5 minutes.'
    good = 'Construis une vraie phrase avec les mots "rat", "hat" et "mat" en 3,5 minutes.'
    swapped = 'Construis une vraie phrase avec les mots "rat", "hat" et "mardi" en 3,5 minutes.'
    assert curation.seed_details(seed) == ["rat", "hat", "mat", "3.5"]
    assert curation.missing_details(good, seed) == [] and curation.missing_details(swapped, seed) == ["mat"]
    params = with_curation(tiny_params, min_similarity=-1.0, max_label_contradiction=1.0)
    samples = [sample(0, "fr", good, seed), sample(1, "fr", swapped, seed)]
    fidelity = curation.fidelity_scores(samples, curation.load_judge(layout), layout.weights_cache)
    kept, dropped = curation.apply_filters(params, samples, curation.build_reference(params, [], [], []), fidelity)
    assert [r["text"] for r in kept] == [good] and [(r["text"], why) for r, why in dropped] == [(swapped, "lost_details")]
    off = with_curation(params, keep_details=False)
    kept, _ = curation.apply_filters(off, samples, curation.build_reference(off, [], [], []), fidelity)
    assert len(kept) == 2
    # Apostrophes are not quotes; a number must keep its digits.
    assert curation.seed_details("Don't tell them it's 42") == ["42"]
    assert curation.missing_details("Ne leur dis pas que c'est 24", "Don't tell them it's 42") == ["42"]
