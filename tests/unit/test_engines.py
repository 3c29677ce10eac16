"""The sampling engines on the tiny random Gemma-3: the conversion cache, parity with the reference
engine, determinism, and the newline stop (text quality is bench/bench_generator.py's business)."""

from __future__ import annotations

from pathlib import Path

import pytest

from duelguard.loop import engines, prompts
from duelguard.loop.engines import CTranslate2Engine, Sampling, TransformersEngine, converted_model
from duelguard.suite import suite_records

PROMPTS = ["English: How do I bake bread?\nFrench:", "English: Plan a picnic.\nGerman:", "Original: hello\nRewritten:"]


@pytest.fixture()
def base_dir(tiny_params, tmp_layout) -> Path:
    from duelguard.backbones import resolve_backbone

    corpus = [r["text"] for r in suite_records("calib")]
    return Path(resolve_backbone(tiny_params.generator.backbone, str(tmp_layout.weights_cache), corpus + ["a\nb"]))


def _tokenizer(path: Path):
    from transformers import AutoTokenizer

    from duelguard.backbones import prepare_tokenizer

    tok = prepare_tokenizer(AutoTokenizer.from_pretrained(path))
    tok.padding_side = "left"
    return tok


def _adapter(base_dir: Path, target: Path) -> Path:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(AutoModelForCausalLM.from_pretrained(base_dir), lora).save_pretrained(target)
    return target


def test_conversion_is_cached_by_content_and_an_adapter_gets_its_own(base_dir: Path, tmp_path: Path) -> None:
    merged: list[Path] = []

    def materialise(target: Path) -> None:  # base + adapter; here the base alone stands in for the merge
        import shutil

        merged.append(target)
        shutil.copytree(base_dir, target)

    cache = tmp_path / "cache"
    first, rec = converted_model(base_dir, None, "int8", cache, materialise)
    assert not rec["cached"] and (first / "model.bin").exists() and merged == []
    again, rec2 = converted_model(base_dir, None, "int8", cache, materialise)
    assert again == first and rec2["cached"] and rec2["key"] == rec["key"]

    adapter = _adapter(base_dir, tmp_path / "adapter")
    with_adapter, rec3 = converted_model(base_dir, adapter, "int8", cache, materialise)
    assert with_adapter != first and not rec3["cached"] and len(merged) == 1
    assert not merged[0].exists()  # the merged source was a temporary

    other_q, rec4 = converted_model(base_dir, None, "float32", cache, materialise)
    assert other_q != first and not rec4["cached"]
    # No temporary directory is left beside the conversions.
    assert sorted(p.name for p in (cache / "ctranslate2").iterdir()) == sorted(
        {first.name, with_adapter.name, other_q.name})


def test_a_changed_adapter_is_a_different_model(base_dir: Path, tmp_path: Path) -> None:
    adapter = _adapter(base_dir, tmp_path / "adapter")
    key = engines.conversion_key(base_dir, adapter, "int8")["key"]
    (adapter / "adapter_config.json").write_text((adapter / "adapter_config.json").read_text() + " ")
    assert engines.conversion_key(base_dir, adapter, "int8")["key"] != key


def test_ctranslate2_matches_the_reference_engine_greedy(base_dir: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    tok = _tokenizer(base_dir)
    greedy = Sampling(temperature=1.0, top_p=1.0, top_k=1, max_new_tokens=8, add_special_tokens=True)
    model_dir, _ = converted_model(base_dir, None, "float32", tmp_path / "cache", lambda _: None)
    fast = CTranslate2Engine(model_dir, tok, greedy, "float32", seed=0, batch_size=2).complete(PROMPTS)
    ref_model = AutoModelForCausalLM.from_pretrained(base_dir).eval()
    ref = TransformersEngine(ref_model, tok, greedy, seed=0, batch_size=3).complete(PROMPTS)
    assert fast == ref and any(fast)


def test_ctranslate2_sampling_is_seeded_and_stops_at_the_first_newline(base_dir: Path, tmp_path: Path) -> None:
    tok = _tokenizer(base_dir)
    sampling = Sampling(temperature=1.5, top_p=1.0, top_k=0, max_new_tokens=24, add_special_tokens=True)
    model_dir, _ = converted_model(base_dir, None, "int8", tmp_path / "cache", lambda _: None)

    def run(seed: int) -> list[list[str]]:
        engine = CTranslate2Engine(model_dir, tok, sampling, "int8", seed=seed, batch_size=3, replicas=2)
        return [engine.complete(PROMPTS * 4) for _ in range(2)]

    first = run(7)
    assert run(7) == first  # the same seed and batches: the same samples, batch after batch
    assert run(8) != first
    assert first[0] != first[1]  # each batch samples afresh
    assert all("\n" not in text for batch in first for text in batch)


def test_submitted_calls_sample_what_the_same_calls_made_in_turn_do(base_dir: Path, tmp_path: Path) -> None:
    """The generate stage queues every call before awaiting any (no replica idles while another finishes
    a long sample): each replica still works through the same sub-batches in the same order, so the
    samples are those of the calls made one after another. A sub-batch of 3 sequences holds one prompt's
    2 samples, so calls of 6, 5 and 9 prompts leave the replicas uneven queues (a call of 5: replica 0
    three sub-batches, replica 1 two)."""
    tok = _tokenizer(base_dir)
    sampling = Sampling(temperature=1.5, top_p=1.0, top_k=0, max_new_tokens=24, add_special_tokens=True)
    model_dir, _ = converted_model(base_dir, None, "int8", tmp_path / "cache", lambda _: None)
    calls = [PROMPTS * 2, PROMPTS[:1] * 5, PROMPTS * 3]

    def engine() -> CTranslate2Engine:
        return CTranslate2Engine(model_dir, tok, sampling, "int8", seed=11, batch_size=3, replicas=2)

    one_by_one = engine()
    in_turn = [one_by_one.complete(c, n=2) for c in calls]
    queued = engine()
    pending = [queued.submit(c, n=2) for c in calls]
    assert [wait() for wait in pending] == in_turn
    assert all(len(out) == 2 * len(c) for out, c in zip(in_turn, calls, strict=True)) and any(in_turn[0])
    # the reference engine runs each call when it is awaited: in submission order, the seeded calls are the same
    from transformers import AutoModelForCausalLM

    ref_model = AutoModelForCausalLM.from_pretrained(base_dir).eval()
    ref = TransformersEngine(ref_model, tok, sampling, seed=3, batch_size=4)
    expected = [ref.complete(c) for c in calls[:2]]
    ref.calls = 0
    assert [wait() for wait in [ref.submit(c) for c in calls[:2]]] == expected
    with pytest.raises(ValueError, match="does not start the prompt"):
        queued.submit(PROMPTS, shared_prefix="no such prefix")


def test_a_cached_shared_prefix_reads_the_same_tokens_as_the_whole_prompt(base_dir: Path, tmp_path: Path) -> None:
    tok = _tokenizer(base_dir)
    greedy = Sampling(temperature=1.0, top_p=1.0, top_k=1, max_new_tokens=8, add_special_tokens=True)
    model_dir, _ = converted_model(base_dir, None, "float32", tmp_path / "cache", lambda _: None)
    prefix = "Requests in English, then in French.\n\n"
    texts = [prefix + p for p in PROMPTS[:2]]
    # The tiny Gemma-3 attends within 64 tokens: these prompts + 8 new tokens fit, the few-shot ones do not.
    engine = CTranslate2Engine(model_dir, tok, greedy, "float32", seed=0, batch_size=4, window=64)
    whole = engine.complete(texts)
    cached = engine.complete(texts, shared_prefix=prefix)
    assert (engine.prefix_hits, engine.prefix_misses) == (1, 0)  # the cache was used, not bypassed
    assert cached == whole and any(whole)
    few_shot = [prompts.fewshot_prompt("translate_create", t, "fr", faithful=True) for t in ("Hi.", "Why is the sky blue?")]
    assert engine.complete(few_shot, shared_prefix=prompts.shared_prefix("fewshot_faithful", "translate_create", "fr"))
    assert (engine.prefix_hits, engine.prefix_misses) == (1, 1)  # past the window: run whole, and counted
    with pytest.raises(ValueError, match="does not start the prompt"):
        engine.complete(texts + ["English: hello\nFrench:"], shared_prefix=prefix)


def test_n_samples_per_prompt_come_prompt_after_prompt_and_differ(base_dir: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    tok = _tokenizer(base_dir)
    sampling = Sampling(temperature=1.5, top_p=1.0, top_k=0, max_new_tokens=12, add_special_tokens=True)
    model_dir, _ = converted_model(base_dir, None, "int8", tmp_path / "cache", lambda _: None)
    fast = CTranslate2Engine(model_dir, tok, sampling, "int8", seed=3, batch_size=4, replicas=2).complete(PROMPTS, n=3)
    ref_model = AutoModelForCausalLM.from_pretrained(base_dir).eval()
    ref = TransformersEngine(ref_model, tok, sampling, seed=3, batch_size=3).complete(PROMPTS, n=3)
    for out in (fast, ref):
        assert len(out) == 3 * len(PROMPTS)
        assert all(len(set(out[3 * p : 3 * p + 3])) > 1 for p in range(len(PROMPTS)))  # n samples, not one copied
    greedy = Sampling(temperature=1.0, top_p=1.0, top_k=1, max_new_tokens=8, add_special_tokens=True)
    one = CTranslate2Engine(model_dir, tok, greedy, "int8", seed=0, batch_size=2).complete(PROMPTS)
    two = CTranslate2Engine(model_dir, tok, greedy, "int8", seed=0, batch_size=2).complete(PROMPTS, n=2)
    assert two == [c for c in one for _ in range(2)]  # greedy: prompt p's 2 hypotheses are its completion, in order
