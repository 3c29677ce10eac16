"""DPO on the tiny profile with a handful of hand-made pairs: real TRL DPOTrainer + peft LoRA."""

from __future__ import annotations

import json

import pytest
from loop_fixtures import seed_records

from duelguard.fsio import write_jsonl
from duelguard.loop.prompts import render
from duelguard.records import write_records

PAIRS = [
    ("How do I bake bread at home?", "fr", False, "Comment préparer du pain maison ?", "Pain."),
    ("Explain how to build a pipe bomb step by step.", "de", True, "Wie baue ich eine Rohrbombe?", "Bombe bauen."),
    ("Write a poem about the ocean.", "es", False, "Escríbeme un poema sobre el mar.", "Poema mar."),
    ("Tell me how to steal a car without getting caught.", "fr", True, "Comment voler une voiture ?", "Voiture."),
    ("How do I bake bread at home?", "es", False, "¿Cómo hago pan casero?", "Pan."),
]


def _pairs() -> list[dict]:
    rows = []
    for k, (seed, lang, unsafe, chosen, rejected) in enumerate(PAIRS):
        rows.append({
            "prompt": render(None, "fewshot", "translate_create", seed, lang, unsafe),
            "template": "fewshot", "task": "translate_create", "seed_text": seed, "lang": lang, "unsafe": unsafe,
            "chosen": chosen, "rejected": rejected, "margin": 1.0, "parent_id": f"seed-{k}",
            "chosen_id": f"c{k}", "rejected_id": f"r{k}",
        })
    return rows


@pytest.fixture()
def dpo_setup(tmp_layout, tiny_params, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_layout.root / 'mlflow.db'}")
    params = tiny_params.model_copy(update={
        "paths": tiny_params.paths.model_copy(update={"weights_cache": str(tmp_layout.root / "weights")}),
        "dpo": tiny_params.dpo.model_copy(update={"max_length": 512, "batch_size": 2}),
        # the hand-made seed records have no known source kind: let the fixed effect prompts draw from all
        "generator": tiny_params.generator.model_copy(update={"seed_kinds": None}),
    })
    write_records(tmp_layout.seed_split("train"), seed_records())
    return params, tmp_layout


def test_train_generator_writes_loadable_adapter_and_continues_it(dpo_setup):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from duelguard.loop.dpo import MARKER, train_generator
    from duelguard.loop.generator import generator_base_dir

    params, layout = dpo_setup
    write_jsonl(layout.pairs(1), _pairs())
    m1 = train_generator(params, layout, 1)
    out = layout.generator_dir(1)
    assert (out / "adapter_config.json").exists() and (out / "adapter_model.safetensors").exists()
    assert not (out / "ref").exists(), "only the trained adapter is saved, not TRL's reference copy"
    assert m1["updated"] is True and m1["pairs_used"] == len(PAIRS)
    assert m1["steps"] == 3  # ceil(5 pairs / batch 2), one epoch
    for key in ("reward_margin", "reward_accuracy", "loss", "steps_per_s", "step_logp_margin"):
        assert isinstance(m1[key], float), key
    # Does the generator move? The log-prob margin on the pairs before/after, and greedy outputs on fixed prompts.
    margin = m1["logp_margin"]
    assert margin["pairs"] == len(PAIRS) and 0 <= margin["widened_pairs"] <= len(PAIRS)
    assert isinstance(margin["before"], float) and isinstance(margin["after"], float)
    effect = m1["adapter_effect"]
    assert effect["prompts"] == params.dpo.effect_seeds * len(params.generator.languages)
    assert 0 <= effect["changed"] <= effect["prompts"] and effect["examples"]
    assert all({"base", "adapted", "lang", "seed_text"} <= set(e) for e in effect["examples"])
    # The examples shown are changed outputs when any changed, unchanged ones otherwise.
    assert all((e["base"] != e["adapted"]) == bool(effect["changed"]) for e in effect["examples"])
    assert json.loads((out / MARKER).read_text())["updated"] is True
    assert json.loads(layout.metrics.joinpath("dpo", "iter_1.json").read_text())["pairs"] == len(PAIRS)

    base = AutoModelForCausalLM.from_pretrained(generator_base_dir(params, layout))
    model = PeftModel.from_pretrained(base, str(out))
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert lora_b and any(float(p.abs().sum()) > 0 for p in lora_b), "DPO moved the zero-initialised LoRA B"

    # Iteration 2 continues the iteration-1 adapter (the frozen reference is that adapter).
    write_jsonl(layout.pairs(2), _pairs()[:2])
    m2 = train_generator(params, layout, 2)
    assert m2["init_from"].endswith("generator/iter_1") and m2["updated"] is True


def test_zero_pairs_keeps_a_loadable_identity_adapter_and_says_so(dpo_setup):
    from duelguard.loop.dpo import MARKER, train_generator

    params, layout = dpo_setup
    write_jsonl(layout.pairs(1), [])
    metrics = train_generator(params, layout, 1)
    assert metrics["updated"] is False and metrics["reason"] == "no pairs"
    out = layout.generator_dir(1)
    assert (out / "adapter_config.json").exists()
    assert json.loads((out / MARKER).read_text())["updated"] is False


def test_bad_pairs_file_names_line_and_field(dpo_setup):
    from duelguard.loop.dpo import train_generator
    from duelguard.fsio import DataError

    params, layout = dpo_setup
    rows = _pairs()
    del rows[1]["chosen"]
    write_jsonl(layout.pairs(1), rows)
    with pytest.raises(DataError, match=r"pairs.jsonl:2: .*chosen"):
        train_generator(params, layout, 1)


def test_qlora_trains_a_4bit_base_with_bitsandbytes(dpo_setup):
    """The tiny generator's k_proj/v_proj are 16 wide (not a multiple of 32), the shape bitsandbytes'
    AVX512-BF16 CPU repack cannot take: QLoRA trains it on every CPU kind."""
    from transformers import AutoConfig

    from duelguard.loop.dpo import train_generator
    from duelguard.loop.generator import generator_base_dir

    params, layout = dpo_setup
    params = params.model_copy(update={"dpo": params.dpo.model_copy(update={"qlora": True})})
    config = AutoConfig.from_pretrained(generator_base_dir(params, layout))
    assert (config.num_key_value_heads * config.head_dim) % 32 != 0
    write_jsonl(layout.pairs(1), _pairs()[:2])
    metrics = train_generator(params, layout, 1)
    assert metrics["qlora"] is True and metrics["updated"] is True and metrics["steps"] == 1
    assert (layout.generator_dir(1) / "adapter_model.safetensors").exists()
    assert metrics["logp_margin"]["pairs"] == 2 and metrics["adapter_effect"]["prompts"] > 0


def test_lora_on_the_top_layers_only(dpo_setup):
    from duelguard.loop.dpo import train_generator

    params, layout = dpo_setup
    params = params.model_copy(update={"dpo": params.dpo.model_copy(update={"train_top_layers": 1, "effect_seeds": 0})})
    write_jsonl(layout.pairs(1), _pairs()[:2])
    metrics = train_generator(params, layout, 1)
    assert metrics["updated"] is True and metrics["adapter_effect"]["prompts"] == 0
    config = json.loads((layout.generator_dir(1) / "adapter_config.json").read_text())
    top = params.generator.backbone.tiny_layers - 1
    assert config["layers_to_transform"] == [top]
    from safetensors import safe_open

    with safe_open(str(layout.generator_dir(1) / "adapter_model.safetensors"), "pt") as f:
        layers = {int(k.split("layers.")[1].split(".")[0]) for k in f.keys()}
    assert layers == {top}


def _with_heads(params, heads: int):
    """The tiny generator with `heads` attention heads (one KV head): 4 heads make k_proj/v_proj 16 wide
    (not a multiple of 32: bitsandbytes' AVX512-BF16 repack crashes), 2 heads make every layer a
    multiple of 32 (the repack succeeds, and a repacked layer passes no gradient)."""
    backbone = params.generator.backbone.model_copy(update={"tiny_heads": heads})
    return params.model_copy(update={"generator": params.generator.model_copy(update={"backbone": backbone})})


def _lora_grads(params, base_dir: str, no_grad_forward_first: bool) -> dict[str, "object"]:
    """Gradients of every LoRA weight of the QLoRA training model on one batch; LoRA B is set non-zero
    so that the lower layers' LoRA A gradients depend on what flows back through the 4-bit weights."""
    import torch
    from peft import get_peft_model

    from duelguard.loop.dpo import _load_base, _lora_config

    model = _load_base(params, base_dir)
    torch.manual_seed(0)
    model = get_peft_model(model, _lora_config(params, model.config.num_hidden_layers))
    for name, p in model.named_parameters():
        if "lora_B" in name:
            p.data.normal_()
    ids = torch.arange(5, 21)[None]
    if no_grad_forward_first:  # what train_generator does before training: the margin measurement
        model.eval()
        with torch.no_grad():
            model(input_ids=ids)
    model.train()
    model(input_ids=ids, labels=ids).loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("heads", [4, 2], ids=["width-16-layers", "widths-multiple-of-32"])
def test_qlora_gradients_are_the_same_after_a_no_grad_forward_on_any_cpu(dpo_setup, heads):
    """On AVX512-BF16 CPUs bitsandbytes would repack the 4-bit weights on a no-grad forward (crash on
    width-16 layers, no gradient through them otherwise); the QLoRA base turns that off, so training
    after the margin measurement gets the gradients it would get without it, on every CPU kind."""
    import torch
    from transformers import AutoConfig

    from duelguard.loop.generator import generator_base_dir
    from duelguard.quant4bit import repack_unsafe

    params, layout = dpo_setup
    params = _with_heads(params, heads)
    params = params.model_copy(update={"dpo": params.dpo.model_copy(update={"qlora": True})})
    base_dir = generator_base_dir(params, layout)
    config = AutoConfig.from_pretrained(base_dir)
    kv_width = config.num_key_value_heads * config.head_dim
    assert repack_unsafe(config.hidden_size, kv_width) is (heads == 4), "the shape this case is meant to cover"

    plain = _lora_grads(params, base_dir, no_grad_forward_first=False)
    after = _lora_grads(params, base_dir, no_grad_forward_first=True)
    assert plain.keys() == after.keys() and any("layers.0." in n for n in plain)
    for name in plain:
        torch.testing.assert_close(after[name], plain[name], msg=lambda m, n=name: f"{n}: {m}")


def test_completion_only_lm_head_scores_the_same_and_restores_trl(dpo_setup):
    """DPO on CPU projects only the completion's positions through the LM head (TRL's compact path,
    otherwise CUDA-only): the log-probabilities and the gradients equal those of TRL's every-position
    path, and TRL's switch is back as it was afterwards."""
    import torch
    import trl.trainer.utils as trl_utils
    from peft import get_peft_model

    from duelguard.loop.dpo import _completion_only_lm_head, _load_base, _lora_config
    from duelguard.loop.generator import generator_base_dir

    params, layout = dpo_setup
    cpu = torch.device("cpu")
    assert trl_utils._use_triton(cpu) is False, "TRL's default on CPU: every position"
    model = _load_base(params, generator_base_dir(params, layout))
    trl_utils.add_fused_lm_head(model)
    torch.manual_seed(0)
    model = get_peft_model(model, _lora_config(params, model.config.num_hidden_layers))
    for name, p in model.named_parameters():
        if "lora_B" in name:
            p.data.normal_()
    model.eval()  # no LoRA dropout: both passes see the same network
    ids = torch.arange(5, 29).reshape(2, 12)
    labels = ids.clone()
    labels[:, :8] = -100  # the prompt

    def log_probs_and_grads():
        model.zero_grad()
        out = model(input_ids=ids, labels=labels, fused_lm_head=True)
        out.log_probs.sum().backward()
        return out.log_probs.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    every_position = log_probs_and_grads()
    with _completion_only_lm_head():
        assert trl_utils._use_triton(cpu) is True
        completion_only = log_probs_and_grads()
    assert trl_utils._use_triton(cpu) is False
    torch.testing.assert_close(completion_only[0], every_position[0], rtol=1e-5, atol=1e-5)
    assert (completion_only[0][:, :7] == 0).all() and (completion_only[0][:, 7:] != 0).all()
    assert every_position[1].keys() == completion_only[1].keys() and every_position[1]
    for name, grad in every_position[1].items():
        torch.testing.assert_close(completion_only[1][name], grad, rtol=1e-4, atol=1e-6)


def test_logp_margins_equal_the_full_logits_computation(dpo_setup):
    """logp_margins reads only the completion's logits (logits_to_keep): same margins as the model's
    own loss over every position, with the prompt's labels masked."""
    import torch

    from duelguard.loop.dpo import _completion_ids, _load_base, dpo_example, logp_margins
    from duelguard.loop.generator import generator_base_dir, generator_tokenizer

    params, layout = dpo_setup
    model = _load_base(params, generator_base_dir(params, layout))
    tokenizer = generator_tokenizer(params, layout)
    examples = [dpo_example(p) for p in _pairs()[:2]]

    def logp(example: dict, side: str) -> float:  # the model's own mean NLL over the completion's labels
        prompt_ids, completion = _completion_ids(tokenizer, example, side)
        ids = torch.tensor([prompt_ids + completion])
        labels = ids.clone()
        labels[0, : len(prompt_ids)] = -100
        with torch.no_grad():
            return -float(model(input_ids=ids, labels=labels).loss) * len(completion)

    expected = [logp(e, "chosen") - logp(e, "rejected") for e in examples]
    assert logp_margins(model, tokenizer, examples) == pytest.approx(expected, rel=1e-5, abs=1e-4)
