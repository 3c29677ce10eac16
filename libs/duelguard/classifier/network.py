"""The classifier's network: a backbone plus a 12-way head, for decoders and encoders alike.

Two shapes, chosen by `pooling` and recorded in duelguard.json so a saved directory loads itself:

- pooling "last" (decoder LMs: Gemma-3, Qwen2): transformers' AutoModelForSequenceClassification,
  which scores the last non-pad token (the DuoGuard design). Batches must be right-padded.
- pooling "mean" or "cls" (encoders: multilingual-e5, BERT/XLM-R family): `PooledClassifier`, the
  backbone's AutoModel, then the mean of the non-pad token states (what e5 was trained to embed
  with) or the first token's state, dropout and a linear head. transformers' own BERT classifier
  reads a pretrained "pooler" layer that e5 does not have, so we pool ourselves.

Both take (input_ids, attention_mask) and return an object with `.logits` (batch, 12), and expose
`.config.num_labels`, so inference, training, ONNX export and Triton treat them the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from duelguard.taxonomy import CATEGORIES, NUM_CATEGORIES

POOLINGS = ("last", "mean", "cls")
HEAD_FILE = "head.safetensors"


class _Output:
    """The one field of transformers' SequenceClassifierOutput the project reads."""

    def __init__(self, logits: Any) -> None:
        self.logits = logits


def _pooled_classifier_class() -> type:
    """Build the nn.Module subclass lazily, so importing this module does not import torch."""
    import torch

    class PooledClassifier(torch.nn.Module):
        """An encoder's token states pooled (mean of non-pad tokens, or the first token) -> linear head."""

        def __init__(self, encoder: Any, pooling: str, num_labels: int = NUM_CATEGORIES, dropout: float = 0.1) -> None:
            super().__init__()
            if pooling not in ("mean", "cls"):
                raise ValueError(f"PooledClassifier pools 'mean' or 'cls', got {pooling!r}")
            self.encoder = encoder
            self.pooling = pooling
            self.config = encoder.config
            self.config.num_labels = num_labels
            self.config.problem_type = "multi_label_classification"
            if num_labels == NUM_CATEGORIES:
                self.config.id2label = dict(enumerate(CATEGORIES))
                self.config.label2id = {name: i for i, name in enumerate(CATEGORIES)}
            self.dropout = torch.nn.Dropout(dropout)
            self.score = torch.nn.Linear(encoder.config.hidden_size, num_labels)

        def forward(self, input_ids: Any, attention_mask: Any, **_: Any) -> _Output:
            states = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            if self.pooling == "cls":
                pooled = states[:, 0]
            else:
                mask = attention_mask.unsqueeze(-1).to(states.dtype)
                pooled = (states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
            return _Output(self.score(self.dropout(pooled)))

        def get_input_embeddings(self) -> Any:
            return self.encoder.get_input_embeddings()

        def save_pretrained(self, path: str | Path) -> None:
            from safetensors.torch import save_file

            self.encoder.save_pretrained(str(path))
            save_file({k: v.contiguous() for k, v in self.score.state_dict().items()}, str(Path(path) / HEAD_FILE))

    return PooledClassifier


def pooled_classifier(encoder: Any, pooling: str) -> Any:
    """A PooledClassifier over a loaded encoder (fresh head)."""
    return _pooled_classifier_class()(encoder, pooling)


def build_network(backbone_dir: str | Path, pooling: str, pad_token_id: int) -> Any:
    """A fresh 12-way classifier over the backbone in `backbone_dir` (head randomly initialised)."""
    if pooling not in POOLINGS:
        raise ValueError(f"unknown pooling {pooling!r}; expected one of {POOLINGS}")
    if pooling == "last":
        from transformers import AutoModelForSequenceClassification

        model = AutoModelForSequenceClassification.from_pretrained(
            str(backbone_dir),
            num_labels=NUM_CATEGORIES,
            problem_type="multi_label_classification",
            id2label=dict(enumerate(CATEGORIES)),
            label2id={name: i for i, name in enumerate(CATEGORIES)},
            pad_token_id=pad_token_id,
        )
        model.config.pad_token_id = pad_token_id
        return model
    return pooled_classifier(_load_encoder(backbone_dir), pooling)


def load_network(path: str | Path, pooling: str) -> Any:
    """The network saved in a classifier directory by `save_pretrained`."""
    if pooling == "last":
        from transformers import AutoModelForSequenceClassification

        return AutoModelForSequenceClassification.from_pretrained(str(path))
    from safetensors.torch import load_file

    network = pooled_classifier(_load_encoder(path), pooling)
    network.score.load_state_dict(load_file(str(Path(path) / HEAD_FILE)))
    return network


def _load_encoder(path: str | Path) -> Any:
    """The backbone's AutoModel; BERT-family models are built without their "pooler" layer, which
    we never use (e5 ships none, so it would only be random weights saved with every model)."""
    from transformers import AutoConfig, AutoModel

    with_pooler = AutoConfig.from_pretrained(str(path)).model_type in ("bert", "xlm-roberta", "roberta")
    kwargs = {"add_pooling_layer": False} if with_pooler else {}
    return AutoModel.from_pretrained(str(path), **kwargs)


def transformer_layers(model: Any) -> Any:
    """The stack of transformer blocks (for freezing all but the top N), for either network shape."""
    inner = model.encoder if hasattr(model, "encoder") and hasattr(model, "pooling") else model.base_model
    for attr in ("layers", "layer"):  # decoders: .layers; BERT: .encoder.layer
        if hasattr(inner, attr):
            return getattr(inner, attr)
        if hasattr(inner, "encoder") and hasattr(inner.encoder, attr):
            return getattr(inner.encoder, attr)
    raise ValueError(f"cannot find the transformer layers of {type(model).__name__}")


def freeze_embeddings(model: Any) -> None:
    """Stop training the input embeddings: the token table (Gemma's 262k x 640 is 60% of its weights)
    and, for BERT-family encoders, the whole embeddings block (positions, token types, LayerNorm), so
    that backward can stop at the first trainable layer."""
    block = getattr(getattr(model, "encoder", None), "embeddings", None) if hasattr(model, "pooling") else None
    params = block.parameters() if block is not None else model.get_input_embeddings().parameters()
    for param in params:
        param.requires_grad_(False)


def head_parameters(model: Any) -> list[Any]:
    """The freshly initialised 12-way head (`score` in both network shapes, also under a LoRA wrapper)."""
    return [p for name, p in model.named_parameters() if name.startswith("score.") or ".score." in name]
