"""4-bit (bitsandbytes) loading on either x86 CPU kind: AVX2-only CPUs and CPUs with AVX512-BF16,
where bitsandbytes repacks 4-bit weights on a no-grad forward (duelguard.quant4bit). The decisions
take the CPU kind as an argument, so both kinds are tested on whichever machine runs the suite; the
real loads below run on this machine's kind."""

from __future__ import annotations

import pytest


def _config(heads: int):
    """The tiny generator's config (hidden 64, one KV head): 4 heads make k_proj/v_proj 16 wide."""
    from transformers import AutoConfig

    return AutoConfig.for_model("gemma3_text", vocab_size=300, hidden_size=64, intermediate_size=128,
                                num_hidden_layers=2, num_attention_heads=heads, num_key_value_heads=1,
                                head_dim=64 // heads, sliding_window=64, tie_word_embeddings=True)


def test_repack_unsafe_shapes():
    from duelguard.quant4bit import repack_unsafe

    assert not repack_unsafe(64, 32) and not repack_unsafe(128, 64)
    assert repack_unsafe(64, 16) and repack_unsafe(64, 48)  # out_features not a multiple of 32
    assert repack_unsafe(48, 32) and repack_unsafe(96, 64)  # in_features not a multiple of the 64 block


def test_cpu_skip_modules_on_either_cpu_kind():
    from duelguard.quant4bit import cpu_skip_modules

    odd = _config(heads=4)
    # AVX2-only: nothing repacks, so nothing is kept out of 4-bit (transformers' default list stays).
    assert cpu_skip_modules(odd, avx512_bf16=False) is None
    # AVX512-BF16: the 16-wide k/v projections of each layer stay unquantised, plus transformers'
    # defaults (the tied output embedding and its input twin), which passing a list would otherwise drop.
    skip = cpu_skip_modules(odd, avx512_bf16=True)
    assert {n for n in skip if ".layers." in n} == {f"model.layers.{i}.self_attn.{p}" for i in (0, 1) for p in ("k_proj", "v_proj")}
    assert {"lm_head", "model.embed_tokens"} <= set(skip)
    # Every width a multiple of 32: the repack takes the whole model.
    assert cpu_skip_modules(_config(heads=2), avx512_bf16=True) is None


def test_keep_4bit_trainable_turns_the_repack_off_and_refuses_a_repacked_layer():
    """The switch is turned off on every 4-bit layer whatever this CPU set it to; a layer already
    repacked (done here by hand, as a no-grad forward does on an AVX512-BF16 CPU) is a clear error."""
    import bitsandbytes as bnb
    import torch
    from bitsandbytes.functional import _convert_weight_packed_for_cpu

    from duelguard.quant4bit import REPACK_FLAG, keep_4bit_trainable

    def model():
        torch.manual_seed(0)
        net = torch.nn.Sequential(bnb.nn.Linear4bit(64, 32, quant_type="nf4", compute_dtype=torch.float32),
                                  bnb.nn.Linear4bit(32, 16, quant_type="nf4", compute_dtype=torch.float32))
        return net.to("cpu")  # quantises the weights

    net = model()
    for layer in net:
        setattr(layer, REPACK_FLAG, True)  # as bitsandbytes sets it on an AVX512-BF16 CPU
    assert keep_4bit_trainable(net) is net
    assert [getattr(layer, REPACK_FLAG) for layer in net] == [False, False]
    net.eval()
    with torch.no_grad():
        assert net(torch.randn(3, 64)).shape == (3, 16)  # the 16-wide layer too
    assert not any(getattr(layer.weight.quant_state, "packing_format_for_cpu", False) for layer in net)

    packed = model()
    first = packed[0]
    first.weight.data, first.weight.quant_state = _convert_weight_packed_for_cpu(first.weight.data, first.weight.quant_state)
    with pytest.raises(RuntimeError, match=r"^0: this 4-bit layer was repacked .* reload the model before training"):
        keep_4bit_trainable(packed)


def test_generator_loads_in_4bit_and_generates_on_this_cpu(tmp_layout, tiny_params):
    """generator.load_in_4bit on the tiny generator (16-wide k/v projections): it loads and generates
    (no-grad forwards) on this CPU, with those layers kept out of 4-bit exactly where the CPU repacks."""
    import bitsandbytes as bnb
    import torch
    from loop_fixtures import seed_records

    from duelguard.loop.generator import load_generator
    from duelguard.quant4bit import cpu_repacks_4bit
    from duelguard.records import write_records

    write_records(tmp_layout.seed_split("train"), seed_records())
    params = tiny_params.model_copy(update={
        "paths": tiny_params.paths.model_copy(update={"weights_cache": str(tmp_layout.root / "weights")}),
        "generator": tiny_params.generator.model_copy(update={"load_in_4bit": True, "dtype": "float32"}),
    })
    model, tokenizer = load_generator(params, tmp_layout, adapter=None)
    attention = model.model.layers[0].self_attn
    assert attention.k_proj.out_features == 16 and attention.q_proj.out_features == 64
    assert isinstance(attention.q_proj, bnb.nn.Linear4bit)
    assert isinstance(attention.k_proj, bnb.nn.Linear4bit) is not cpu_repacks_4bit()
    prompt = tokenizer(["Write a poem about the sea:"], return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**prompt, max_new_tokens=4, min_new_tokens=4, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id)
    assert out.shape[1] == prompt["input_ids"].shape[1] + 4
