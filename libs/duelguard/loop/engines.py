"""Sampling engines: what turns rendered prompts into completions for the `generate` stage.

Two engines behind one method, `complete(prompts, n, shared_prefix) -> completions` (n per prompt,
prompt after prompt, cut at the first newline: every template asks for one line), each opened with a seed:

- ``ctranslate2`` (the default): the generator (base, or base + the previous iteration's DPO adapter
  merged in) is converted once into CTranslate2's format, int8 on CPU, and sampled batched. The
  conversion is content-addressed (`converted_model`): its key hashes the base weights, the adapter
  and the conversion settings, so an unchanged model is never converted twice, and a DPO step that
  changed the adapter always gets a fresh conversion. The same code runs on a GPU (device "cuda",
  compute_type "auto") for the cluster profile. Two things make it cheaper per sample without
  changing what is sampled: the prompts' shared prefix (a few-shot prompt's header and examples, ~180
  of its ~200 tokens) is passed as CTranslate2's cached `static_prompt`, so it is run through the
  model once per replica instead of once per prompt; and the n samples of a prompt are drawn as n
  hypotheses of one sequence (`num_hypotheses`), so the prompt's own tokens are not re-run n times.
  The model still reads exactly the tokens of the whole prompt (the prefix's tokens are checked to
  be a prefix of each prompt's tokens; where a tokenizer merges across the boundary, or prompt + new
  tokens would outgrow the model's sliding attention window, that call runs without the cache,
  counted in `prefix_misses`). Measured on Gemma-3-270M int8, 2 cores: 5.4 ->
  8.9 samples/s (README, "Generator choice"). And the generate stage queues all its calls before it
  awaits any (`submit`): a sub-batch runs until its longest sample ends, and a call awaited before the
  next is queued left one replica idle while the other finished (the same samples, byte for byte; the
  demo's 2,040 samples in 242 s instead of 277 s).
- ``transformers``: `model.generate` in the checkpoint's dtype; the reference, and the engine DPO's
  own model is trained in. Measured 6-18x slower on 2 CPU cores (bench/bench_generator.py, the loop).

Sampling is the same in both: temperature, top-p, and top-k = generator.top_k (transformers' own
default of 50, written out so that both engines apply it: sampling the full 262k-token Gemma
vocabulary made CTranslate2 2.5x slower for no gain in the samples).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from duelguard.fsio import atomic_write_json, publish_dir

CONVERSION_FILE = "duelguard-conversion.json"  # written last into a converted directory: it is complete
# How a newline appears in a vocabulary: itself (SentencePiece, e.g. Gemma), "Ċ" (byte-level BPE:
# GPT-2, Qwen, the tiny tokenizer) or a byte-fallback piece.
_NEWLINE_MARKS = ("\n", "Ċ")


@dataclass(frozen=True)
class Sampling:
    """How every engine samples (from params.generator)."""

    temperature: float
    top_p: float
    top_k: int
    max_new_tokens: int
    add_special_tokens: bool  # few-shot prompts get the tokenizer's BOS; chat prompts already hold theirs


class Engine(Protocol):
    """Completions for batches of rendered prompts. An engine is opened with a seed: the same seed and
    the same sequence of calls give the same completions (a stage reruns whole, never mid-way)."""

    name: str
    parallel: int  # sequences (prompts x n) per call that keep the engine fully busy

    def complete(self, prompts: list[str], n: int = 1, shared_prefix: str = "") -> list[str]:
        """n completions per prompt, prompt-major (prompt 0's n, then prompt 1's...). shared_prefix, if
        given, is a text every prompt starts with (an engine may compute it once)."""
        ...

    def submit(self, prompts: list[str], n: int = 1, shared_prefix: str = "") -> Callable[[], list[str]]:
        """`complete`, queued: returns what waits for and gives its completions. Calls submitted one
        after another and awaited in that order give exactly what the same `complete` calls would; an
        engine that can overlap them does (a batched engine's workers go on to the next call's batches
        instead of idling)."""
        ...


def newline_token_ids(tokenizer: Any) -> list[int]:
    """Ids of every token whose text holds a newline (a scan of the vocabulary strings, < 1 s).

    transformers' own stop_strings does the same job but precomputes a table over the whole
    vocabulary that took ~25 s for Gemma's 262k tokens on this CPU.
    """
    ids = [i for tok, i in tokenizer.get_vocab().items() if tok == "<0x0A>" or any(m in tok for m in _NEWLINE_MARKS)]
    if not ids:
        raise ValueError(f"{type(tokenizer).__name__}: no newline token found in the vocabulary")
    return sorted(ids)


def newline_stopper(tokenizer: Any) -> Any:
    """A transformers stopping criterion that finishes each sequence of a batch once it emits a newline."""
    import torch
    from transformers import StoppingCriteria

    stop_ids = torch.tensor(newline_token_ids(tokenizer))

    class StopAtNewline(StoppingCriteria):
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            return torch.isin(input_ids[:, -1], stop_ids.to(input_ids.device))

    return StopAtNewline()


class TransformersEngine:
    """`model.generate` on a left-padded batch (a decoder continues from the last position)."""

    name = "transformers"

    def __init__(self, model: Any, tokenizer: Any, sampling: Sampling, seed: int, batch_size: int) -> None:
        self.model, self.tokenizer, self.sampling = model, tokenizer, sampling
        self.parallel = batch_size
        self.stopper = newline_stopper(tokenizer)
        self.seed, self.calls = seed, 0

    def submit(self, prompts: list[str], n: int = 1, shared_prefix: str = "") -> Callable[[], list[str]]:
        """Runs when awaited, on the calling thread (one batch at a time: nothing to overlap); awaited in
        the order submitted, the seeded calls are those `complete` would make."""
        _check_prefix(prompts, shared_prefix)
        return lambda: self.complete(prompts, n, shared_prefix)

    def complete(self, prompts: list[str], n: int = 1, shared_prefix: str = "") -> list[str]:
        import torch
        from transformers import StoppingCriteriaList

        _check_prefix(prompts, shared_prefix)
        s, tok = self.sampling, self.tokenizer
        enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=s.add_special_tokens)
        enc = {k: v.to(self.model.device) for k, v in enc.items()}
        torch.manual_seed(self.seed + self.calls)
        self.calls += 1
        with torch.no_grad():
            out = self.model.generate(
                **enc, do_sample=True, temperature=s.temperature, top_p=s.top_p, top_k=s.top_k,
                max_new_tokens=s.max_new_tokens, stopping_criteria=StoppingCriteriaList([self.stopper]),
                pad_token_id=tok.pad_token_id, num_return_sequences=n,
            )
        return tok.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)


def _check_prefix(prompts: list[str], shared_prefix: str) -> None:
    """A shared prefix must start every prompt (it is an optimisation, never a different prompt)."""
    bad = next((p for p in prompts if not p.startswith(shared_prefix)), None)
    if bad is not None:
        raise ValueError(f"shared_prefix {shared_prefix[:40]!r}... does not start the prompt {bad[:80]!r}")


def ct2_device() -> str:
    """"cuda" when CTranslate2 sees a GPU, else "cpu"."""
    import ctranslate2

    return "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"


class CTranslate2Engine:
    """A converted model sampled by CTranslate2, stopping each sequence at its first newline.

    Replicas, not threads: decoding a small batch is latency-bound, so on a 2-core CPU two replicas of
    one thread each sample 1.8x faster than one replica with two threads (measured on Gemma-3-270M int8:
    4.6 vs 2.5 samples/s). Each replica is its own Generator with one worker: CTranslate2 samples with
    a thread-local generator seeded, when the worker starts, from the global seed (reseeding later
    reaches no worker: two reseeded calls on one Generator differed). Sub-batch k of a call goes to
    replica k mod n and each replica works through its queue in order, so the same seed and the same
    calls give the same samples. One replica on a GPU.
    """

    name = "ctranslate2"

    def __init__(self, model_dir: Path, tokenizer: Any, sampling: Sampling, compute_type: str, seed: int,
                 batch_size: int, replicas: int | None = None, window: int | None = None) -> None:
        import ctranslate2

        device = ct2_device()
        n = replicas or (1 if device == "cuda" else max(1, os.cpu_count() or 1))
        self.replicas = []
        for r in range(n):
            ctranslate2.set_random_seed(seed + 7919 * r)
            self.replicas.append(ctranslate2.Generator(str(model_dir), device=device, compute_type=compute_type,
                                                       inter_threads=1, intra_threads=1 if device == "cpu" else 0))
        self.tokenizer, self.sampling, self.batch_size = tokenizer, sampling, batch_size
        ends = newline_token_ids(tokenizer)
        if tokenizer.eos_token_id is not None:
            ends.append(tokenizer.eos_token_id)
        self.end_ids = sorted(set(ends))
        self.prefix_hits = self.prefix_misses = 0
        # The model's sliding attention window, if any: CTranslate2 4.x aborts the process (a double free)
        # when a cached static prompt is longer than the window and decoding goes on past it (measured on
        # the tiny Gemma-3, window 64). The cache is used only where prompt + new tokens fit the window.
        self.window = window

    @property
    def parallel(self) -> int:
        """Sequences one call can keep every replica busy with."""
        return self.batch_size * len(self.replicas)

    def _split(self, ids: list[list[int]], shared_prefix: str) -> tuple[list[str] | None, list[list[int]]]:
        """(static prompt tokens, the rest of each prompt), or (None, whole prompts) when the prefix's
        tokens are not a prefix of every prompt's tokens (the tokenizer merged across the boundary) or
        the sequences would outgrow the model's sliding window."""
        if not shared_prefix:
            return None, ids
        head = self.tokenizer(shared_prefix, add_special_tokens=self.sampling.add_special_tokens)["input_ids"]
        too_long = self.window is not None and max(map(len, ids)) + self.sampling.max_new_tokens > self.window
        if too_long or not head or any(len(i) <= len(head) or i[: len(head)] != head for i in ids):
            self.prefix_misses += 1
            return None, ids
        self.prefix_hits += 1
        return self.tokenizer.convert_ids_to_tokens(head), [i[len(head):] for i in ids]

    def complete(self, prompts: list[str], n: int = 1, shared_prefix: str = "") -> list[str]:
        return self.submit(prompts, n, shared_prefix)()

    def submit(self, prompts: list[str], n: int = 1, shared_prefix: str = "") -> Callable[[], list[str]]:
        """The call's sub-batches queued on the replicas (asynchronous); the returned function waits for
        them. Each replica works through its queue in order, whoever waits, so calls submitted back to
        back sample exactly what the same calls made one after another would, without each call waiting
        for its slowest replica while the others idle (a sub-batch runs until its longest sample ends)."""
        _check_prefix(prompts, shared_prefix)
        s, tok = self.sampling, self.tokenizer
        ids = [tok(p, add_special_tokens=s.add_special_tokens)["input_ids"] for p in prompts]
        static, rest = self._split(ids, shared_prefix)
        tokens = [tok.convert_ids_to_tokens(i) for i in rest]
        hyps = n
        if s.top_k == 1:  # greedy: CTranslate2 takes n hypotheses for a beam search; copy the prompts instead
            tokens, hyps = [t for t in tokens for _ in range(n)], 1
        per_batch = max(1, self.batch_size // hyps)  # batch_size counts sequences: prompts x hypotheses
        pending = []
        for k, start in enumerate(range(0, len(tokens), per_batch)):
            replica = self.replicas[k % len(self.replicas)]
            pending.append(replica.generate_batch(
                tokens[start : start + per_batch], max_length=s.max_new_tokens, sampling_topk=s.top_k,
                sampling_topp=s.top_p, sampling_temperature=s.temperature, include_prompt_in_result=False,
                end_token=self.end_ids, num_hypotheses=hyps, static_prompt=static, asynchronous=True))

        def result() -> list[str]:
            out = [tok.decode(seq, skip_special_tokens=True) for batch in pending for r in batch
                   for seq in r.result().sequences_ids]
            if len(out) != n * len(prompts):
                raise RuntimeError(f"CTranslate2 returned {len(out)} completions for {len(prompts)} prompts x {n}")
            return out

        return result


def content_digest(path: Path) -> str:
    """sha256 over a directory's (or file's) relative names and bytes: what the model *is*."""
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for f in files:
        h.update(str(f.relative_to(path) if path.is_dir() else f.name).encode() + b"\0")
        with f.open("rb") as fh:
            while chunk := fh.read(1 << 22):
                h.update(chunk)
    return h.hexdigest()


def conversion_key(base_dir: Path, adapter: Path | None, quantization: str | None) -> dict[str, Any]:
    """What a conversion depends on, and its key (the first 16 hex of their hash)."""
    import ctranslate2

    parts = {"base": content_digest(base_dir), "adapter": content_digest(adapter) if adapter else None,
             "quantization": quantization, "ctranslate2": ctranslate2.__version__}
    parts["key"] = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]
    return parts


def converted_model(base_dir: Path, adapter: Path | None, quantization: str | None, cache_root: Path,
                    materialise: Callable[[Path], None]) -> tuple[Path, dict[str, Any]]:
    """The CTranslate2 directory of base (+ adapter), converting only on a cache miss.

    materialise(dir) writes the model to convert (the base merged with the adapter, with its
    tokenizer) into dir; it is called only when an adapter must be merged. Returns the directory and
    a record of the conversion (key, whether it was cached, seconds). The directory appears whole or
    not at all (converted in a temporary sibling, then renamed), so a killed run leaves no half model.
    """
    import ctranslate2

    t0 = time.perf_counter()
    key = conversion_key(base_dir, adapter, quantization)
    out = cache_root / "ctranslate2" / key["key"]
    if (out / CONVERSION_FILE).exists():
        return out, {**key, "cached": True, "hash_s": round(time.perf_counter() - t0, 2)}
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        source = base_dir
        if adapter is not None:
            source = work / "merged"
            materialise(source)
        t1 = time.perf_counter()
        converter = ctranslate2.converters.TransformersConverter(str(source), low_cpu_mem_usage=True)
        converter.convert(str(work / "model"), quantization=quantization)
        record = {**key, "cached": False, "convert_s": round(time.perf_counter() - t1, 2),
                  "total_s": round(time.perf_counter() - t0, 2)}
        atomic_write_json(work / "model" / CONVERSION_FILE, record)
        publish_dir(work / "model", out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out, record
