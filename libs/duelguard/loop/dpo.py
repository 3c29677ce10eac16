"""The generator's move in the game (loop stage `train_generator`): DPO on the classifier's failures.

TRL's DPOTrainer trains a LoRA adapter (peft) on the pairs of duelguard.loop.pairs.build_pairs: for each
generation prompt, prefer the sample the classifier got most wrong over the one it got most right.
The loss is DPO's sigmoid loss plus an NLL (SFT) term on the chosen sample weighted by
params.dpo.sft_weight: the paper's RPO objective. TRL 1.16 has no `rpo_alpha`; the same objective
is loss_type=["sigmoid", "sft"] with loss_weights=[1, sft_weight].

The reference model is implicit (ref_model=None): with a fresh adapter it is the base model
(adapter disabled); when continuing the previous iteration's adapter (dpo.init_from=previous) TRL
keeps a frozen copy of that adapter as the reference, so each iteration's update is measured
against the generator that produced the samples.

Does the generator actually move? Two measurements per trained iteration (metrics/dpo/iter_<i>.json):
- `logp_margin`: the mean over the pairs of log p(chosen) - log p(rejected) (summed completion token
  log-probabilities) before training (the reference: the adapter as loaded) and after. DPO should widen it.
- `adapter_effect`: greedy decoding of a fixed set of generation prompts (the first
  `dpo.effect_seeds` translate_create seeds of iteration 0's draw, in every generator language) with
  the adapter and without it (base model); how many outputs changed, with examples. An adapter that
  changes nothing is reported as such.

`dpo.train_top_layers: N` puts LoRA on the top N decoder layers only: backward then stops there, the
CPU profile's lever on DPO step time (the forward passes still run every layer).

Every iteration leaves a loadable adapter in layout.generator_dir(i) (published atomically: written
to a temporary sibling, then renamed), with `duelguard_dpo.json` beside it saying whether it was
updated and why not. With no usable pairs the previous adapter is carried over unchanged (or, in
iteration 1, a zero-initialised adapter that equals the base model), so the next iteration's
generator can always load layout.generator_dir(i).
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from duelguard.config import Params
from duelguard.fsio import DataError, atomic_write_json
from duelguard.layout import Layout
from duelguard.loop.generator import generator_base_dir, generator_tokenizer
from duelguard.loop.prompts import is_chat

MARKER = "duelguard_dpo.json"
ADAPTER_CONFIG = "adapter_config.json"
PAIR_FIELDS = ("prompt", "chosen", "rejected", "template", "task", "seed_text", "lang", "unsafe")


def read_pairs(path: Path) -> list[dict[str, Any]]:
    """Pairs file rows, each checked for the fields DPO needs (errors name file:line and field)."""
    from duelguard.fsio import iter_jsonl

    rows = []
    for line_no, row in iter_jsonl(path):
        missing = [f for f in PAIR_FIELDS if f not in row]
        if missing:
            raise DataError(f"{path}:{line_no}: pair is missing field(s) {', '.join(missing)}")
        for field in ("prompt", "chosen", "rejected"):
            if not isinstance(row[field], str) or not row[field].strip():
                raise DataError(f"{path}:{line_no}: '{field}' must be a non-empty string")
        rows.append(row)
    return rows


def dpo_example(pair: dict[str, Any]) -> dict[str, Any]:
    """One TRL training example in the shape generation used.

    chat: conversational format (TRL applies the tokenizer's chat template exactly as generation
    did, and the sample is the assistant turn). fewshot: the rendered continuation prompt and the
    sample as its continuation (" text\\n", the pattern's line; TRL appends EOS).
    """
    if is_chat(pair["template"]):
        from duelguard.loop.prompts import chat_messages

        return {
            "prompt": chat_messages(pair["task"], pair["seed_text"], pair["lang"], bool(pair["unsafe"]),
                                    faithful=pair["template"] == "chat_faithful"),
            "chosen": [{"role": "assistant", "content": pair["chosen"]}],
            "rejected": [{"role": "assistant", "content": pair["rejected"]}],
        }
    return {"prompt": pair["prompt"], "chosen": " " + pair["chosen"] + "\n", "rejected": " " + pair["rejected"] + "\n"}


def prompt_length(tokenizer: Any, example: dict[str, Any]) -> int:
    """Tokens of the prompt alone, tokenised the way TRL does it."""
    if isinstance(example["prompt"], list):
        ids = tokenizer.apply_chat_template(example["prompt"], add_generation_prompt=True, tokenize=True)
        return len(ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids)
    return len(tokenizer(example["prompt"])["input_ids"])


def previous_adapter(params: Params, layout: Layout, iteration: int) -> Path | None:
    """The adapter to continue from (dpo.init_from=previous), if an earlier iteration saved one."""
    if params.dpo.init_from != "previous":
        return None
    prev = layout.generator_dir(iteration - 1)
    return prev if (prev / ADAPTER_CONFIG).exists() else None


def _lora_config(params: Params, num_layers: int) -> Any:
    from peft import LoraConfig

    lora, top = params.dpo.lora, params.dpo.train_top_layers
    if top is not None and not 1 <= top <= num_layers:
        from duelguard.config import ConfigError

        raise ConfigError(f"dpo.train_top_layers: must be in [1, {num_layers}] for this generator, got {top}")
    return LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules),
        layers_to_transform=None if top is None else list(range(num_layers - top, num_layers)),
        task_type="CAUSAL_LM",
    )


def _load_base(params: Params, base_dir: str) -> Any:
    """The generator backbone for training: fp32 on CPU, bf16 on GPU, 4-bit NF4 when dpo.qlora.

    The 4-bit base has bitsandbytes' AVX512-BF16 CPU repack turned off before its first forward
    (duelguard.quant4bit): otherwise the no-grad margin measurement below repacks every 4-bit layer
    into an inference-only layout, which crashes on layers whose width is not a multiple of 32 and,
    where it succeeds, trains with wrong gradients. Every CPU kind then trains the same way.
    """
    import torch
    from transformers import AutoModelForCausalLM

    cuda = torch.cuda.is_available()
    dtype = torch.bfloat16 if cuda else torch.float32
    kwargs: dict[str, Any] = {"dtype": dtype}
    if params.dpo.qlora:
        from peft import prepare_model_for_kbit_training
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype,
        )
        from duelguard.quant4bit import keep_4bit_trainable

        model = keep_4bit_trainable(AutoModelForCausalLM.from_pretrained(base_dir, **kwargs))
        return prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    return AutoModelForCausalLM.from_pretrained(base_dir, **kwargs)


def _summarise(log_history: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and last value of the DPO step metrics, plus the trainer's throughput."""
    steps = [h for h in log_history if "rewards/margins" in h]
    final = next((h for h in reversed(log_history) if "train_runtime" in h), {})
    for h in steps:
        if "logps/chosen" in h and "logps/rejected" in h:
            h["logps/margin"] = h["logps/chosen"] - h["logps/rejected"]

    def mean(key: str) -> float | None:
        values = [h[key] for h in steps if key in h and math.isfinite(h[key])]
        return round(sum(values) / len(values), 6) if values else None

    return {
        "steps": len(steps),
        "loss": mean("loss"),
        "reward_margin": mean("rewards/margins"),
        "reward_accuracy": mean("rewards/accuracies"),
        "reward_chosen": mean("rewards/chosen"),
        "reward_rejected": mean("rewards/rejected"),
        "step_logp_margin": mean("logps/margin"),
        "final_reward_margin": steps[-1].get("rewards/margins") if steps else None,
        "final_reward_accuracy": steps[-1].get("rewards/accuracies") if steps else None,
        "train_loss": final.get("train_loss"),
        "train_runtime_s": final.get("train_runtime"),
        "steps_per_s": final.get("train_steps_per_second"),
    }


def _train(params: Params, base_dir: str, tokenizer: Any, examples: list[dict[str, Any]], prev: Path | None,
           work_dir: Path, out_dir: Path, effect_prompts: list[dict[str, Any]]) -> dict[str, Any]:
    """Run DPOTrainer on `examples`; save the 'default' adapter to `out_dir`; return step metrics."""
    import torch
    from datasets import Dataset
    from peft import PeftModel
    from trl import DPOConfig, DPOTrainer

    cfg = params.dpo
    cuda = torch.cuda.is_available()
    model = _load_base(params, base_dir)
    peft_config = None
    if prev is not None:
        model = PeftModel.from_pretrained(model, str(prev), is_trainable=True)
    else:
        peft_config = _lora_config(params, model.config.num_hidden_layers)
    margin_before = logp_margins(model, tokenizer, examples)  # the reference: what DPO starts from
    args = DPOConfig(
        output_dir=str(work_dir),
        beta=cfg.beta,
        loss_type=["sigmoid", "sft"],
        loss_weights=[1.0, cfg.sft_weight],
        learning_rate=cfg.learning_rate,
        num_train_epochs=cfg.epochs,
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        max_length=cfg.max_length,
        use_cpu=not cuda,
        bf16=cuda and torch.cuda.is_bf16_supported(),
        gradient_checkpointing=cuda,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        seed=cfg.random_seed,
        data_seed=cfg.random_seed,
        dataloader_num_workers=0,
    )
    trainer = DPOTrainer(
        model=model,
        ref_model=None,
        args=args,
        train_dataset=Dataset.from_list(examples),
        processing_class=tokenizer,
        peft_config=peft_config,
    )
    with _completion_only_lm_head():
        trainer.train()
    trainer.model.save_pretrained(str(out_dir), selected_adapters=["default"])
    summary = _summarise(trainer.state.log_history)
    trained = trainer.model
    margin_after = logp_margins(trained, tokenizer, examples)
    summary["logp_margin"] = {"before": _mean(margin_before), "after": _mean(margin_after),
                              "widened_pairs": sum(a > b for a, b in zip(margin_after, margin_before, strict=True)),
                              "pairs": len(examples)}
    summary["adapter_effect"] = adapter_effect(params, trained, tokenizer, effect_prompts)
    return summary


@contextlib.contextmanager
def _completion_only_lm_head() -> Iterator[None]:
    """While DPO trains: project only the completion's positions through the LM head on CPU too.

    TRL's fused LM head (trl.trainer.utils.add_fused_lm_head) scores only the positions with a label
    on CUDA/XPU, but every position elsewhere, so that compilers for other accelerators see fixed
    shapes. On CPU (eager) that means Gemma's 262k-word output layer runs forward and backward over the
    ~200-token few-shot prompt for a ~40-token completion: measured under cProfile, 36 s of two steps'
    98 s were that layer's backward (training 81 s -> 16 s with this switch, the same metrics). Both
    paths compute the same log-probabilities (the prompt's are masked to zero).
    The switch is TRL's own `compact` flag, read from `trl.trainer.utils._use_triton` at call time;
    the tile kernels keep their torch fallback (chunked_logprob reads its own copy)."""
    import trl.trainer.utils as trl_utils

    original = getattr(trl_utils, "_use_triton", None)
    if original is None:  # another TRL: its default path is correct, only slower
        yield
        return
    trl_utils._use_triton = lambda device: device.type == "cpu" or original(device)
    try:
        yield
    finally:
        trl_utils._use_triton = original


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 4) if values else None


def _completion_ids(tokenizer: Any, example: dict[str, Any], side: str) -> tuple[list[int], list[int]]:
    """(prompt ids, completion ids) of one side of a DPO example, tokenised as TRL does: the chat
    template with a generation prompt for chat prompts, the plain text (special tokens included) for
    few-shot ones; the completion without special tokens, then EOS."""
    if isinstance(example["prompt"], list):
        ids = tokenizer.apply_chat_template(example["prompt"], add_generation_prompt=True, tokenize=True)
        prompt_ids = list(ids["input_ids"] if hasattr(ids, "keys") else ids)
        text = example[side][0]["content"]
    else:
        prompt_ids = tokenizer(example["prompt"])["input_ids"]
        text = example[side]
    completion = tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return prompt_ids, completion


def logp_margins(model: Any, tokenizer: Any, examples: list[dict[str, Any]]) -> list[float]:
    """Per example: log p(chosen | prompt) - log p(rejected | prompt) under `model` (summed token log-probs)."""
    import torch

    model.eval()
    margins = []
    with torch.no_grad():
        for example in examples:
            logps = []
            for side in ("chosen", "rejected"):
                prompt_ids, completion = _completion_ids(tokenizer, example, side)
                ids = torch.tensor([prompt_ids + completion], device=model.device)
                # Logits of the positions that predict the completion only: Gemma's 262k-word output layer
                # over the ~200-token prompt was most of this function's time.
                logits = model(input_ids=ids, logits_to_keep=len(completion) + 1).logits[0, :-1].float()
                token_logps = torch.log_softmax(logits, dim=-1).gather(1, ids[0, len(prompt_ids):, None])
                logps.append(float(token_logps.sum()))
            margins.append(logps[0] - logps[1])
    return margins


def effect_prompts(params: Params, layout: Layout) -> list[dict[str, str]]:
    """The fixed prompts the adapter's effect is measured on: the first dpo.effect_seeds seeds of
    iteration 0's translate_create draw (the same at every iteration), in each generator language."""
    from duelguard.loop.generator import select_seeds
    from duelguard.records import read_records
    from duelguard.taxonomy import is_unsafe

    train = read_records(layout.seed_split("train"))
    seeds = select_seeds(params, train, "translate_create", iteration=0)[: params.dpo.effect_seeds]
    return [{"seed_text": s["text"], "lang": lang, "unsafe": is_unsafe(s["labels"])}
            for s in seeds for lang in params.generator.languages]


def adapter_effect(params: Params, model: Any, tokenizer: Any, fixed: list[dict[str, Any]]) -> dict[str, Any]:
    """Greedy decoding of the fixed prompts with the adapter and with it disabled (the base model)."""
    import torch

    from duelguard.loop.engines import newline_stopper
    from duelguard.loop.prompts import end_markers, postprocess, render

    if not fixed:
        return {"prompts": 0, "changed": 0, "examples": []}
    template = params.generator.template
    texts = [render(tokenizer, template, "translate_create", p["seed_text"], p["lang"], p["unsafe"]) for p in fixed]
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    try:
        enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=not is_chat(template))
        enc = {k: v.to(model.device) for k, v in enc.items()}
        stopper = newline_stopper(tokenizer)
        model.eval()

        def decode() -> list[str]:
            with torch.no_grad():
                out = model.generate(**enc, do_sample=False, max_new_tokens=params.generator.max_new_tokens,
                                     stopping_criteria=[stopper], pad_token_id=tokenizer.pad_token_id)
            raw = tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
            return [postprocess(r, end_markers(template, "translate_create", p["lang"])) for r, p in zip(raw, fixed)]

        adapted = decode()
        with model.disable_adapter():
            base = decode()
    finally:
        tokenizer.padding_side = side
    changed = [i for i, (a, b) in enumerate(zip(adapted, base)) if a != b]
    return {
        "prompts": len(fixed),
        "changed": len(changed),
        "examples": [{"lang": fixed[i]["lang"], "seed_text": fixed[i]["seed_text"], "base": base[i],
                      "adapted": adapted[i]} for i in (changed or range(len(fixed)))[:3]],
    }


def _identity_adapter(params: Params, base_dir: str, out_dir: Path) -> None:
    """A zero-initialised LoRA adapter (LoRA's B starts at 0): loads like any adapter, equals the base."""
    from peft import get_peft_model

    model = _load_base(params, base_dir)
    get_peft_model(model, _lora_config(params, model.config.num_hidden_layers)).save_pretrained(str(out_dir))


def train_generator(params: Params, layout: Layout, iteration: int) -> dict[str, Any]:
    """Stage `train_generator`: DPO-train the generator's LoRA adapter on iteration i's pairs.

    Writes layout.generator_dir(i) (adapter + duelguard_dpo.json) and layout.dpo_metrics(i);
    logs params.dpo and the metrics to MLflow. Returns reward margin/accuracy, loss, steps/s.
    """
    from duelguard.tracking import mlflow_run

    if iteration < 1:
        raise ValueError(f"train_generator runs in loop iterations >= 1, got {iteration}")
    if not params.dpo.lora.enabled:
        from duelguard.config import ConfigError

        raise ConfigError("dpo.lora.enabled: must be true (the generator is trained and shipped as a LoRA adapter)")
    pairs_path = layout.pairs(iteration)
    pairs = read_pairs(pairs_path)
    base_dir = generator_base_dir(params, layout)
    tokenizer = generator_tokenizer(params, layout)
    prev = previous_adapter(params, layout, iteration)

    examples = [dpo_example(p) for p in pairs]
    fitting = [(p, e) for p, e in zip(pairs, examples, strict=True)
               if prompt_length(tokenizer, e) < params.dpo.max_length]
    # The most informative pairs first: the largest loss margin (a pair against a drifted sample has no
    # margin; the chosen sample's own loss stands in), ties by id, so the choice is deterministic.
    fitting.sort(key=lambda pe: (-(pe[0]["margin"] if pe[0].get("margin") is not None else pe[0]["chosen_loss"]),
                                 pe[0]["chosen_id"]))
    usable = [e for _, e in fitting[: params.dpo.max_pairs]]
    metrics: dict[str, Any] = {
        "iteration": iteration,
        "pairs": len(pairs),
        "pairs_used": len(usable),
        "dropped_prompt_too_long": len(examples) - len(fitting),
        "max_pairs": params.dpo.max_pairs,
        "init_from": str(prev.relative_to(layout.root)) if prev and prev.is_relative_to(layout.root) else (
            str(prev) if prev else "base"
        ),
        "qlora": params.dpo.qlora,
    }
    final = layout.generator_dir(iteration)
    final.parent.mkdir(parents=True, exist_ok=True)
    for stale in final.parent.glob(f".{final.name}.*-*"):  # left by a run killed mid-stage
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    work = Path(tempfile.mkdtemp(prefix=f".{final.name}.work-", dir=final.parent))
    try:
        with mlflow_run(params, "train_generator", iteration, data_files=[pairs_path], log_sections=["dpo"],
                        root=layout.root) as run:
            if usable:
                started = time.perf_counter()
                metrics.update(_train(params, base_dir, tokenizer, usable, prev, work, tmp,
                                      effect_prompts(params, layout)))
                metrics["wall_s"] = round(time.perf_counter() - started, 3)
                metrics["updated"] = True
            else:
                # No preference signal this iteration: keep the generator as it was, and say so.
                metrics["updated"] = False
                metrics["reason"] = "no pairs" if not pairs else f"all {len(pairs)} prompts exceed dpo.max_length"
                if prev is not None:
                    shutil.copytree(prev, tmp, dirs_exist_ok=True)
                else:
                    _identity_adapter(params, base_dir, tmp)
            metrics["mlflow_run_id"] = run.info.run_id
            import mlflow

            flat = {k: v for k, v in metrics.items()}
            for key in ("logp_margin", "adapter_effect"):
                flat.update({f"{key}_{k}": v for k, v in (metrics.get(key) or {}).items()})
            mlflow.log_metrics({k: float(v) for k, v in flat.items()
                                if isinstance(v, (int, float)) and not isinstance(v, bool) and v is not None})
            mlflow.set_tag("duelguard.dpo_updated", str(metrics["updated"]).lower())
        (tmp / MARKER).write_text(
            json.dumps({**metrics, "base_model": base_dir, "backbone": params.generator.backbone.model_dump()},
                       indent=2) + "\n",
            encoding="utf-8",
        )
        from duelguard.fsio import publish_dir

        publish_dir(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
    atomic_write_json(layout.dpo_metrics(iteration), metrics)
    return metrics

