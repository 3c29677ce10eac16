"""CLI commands: classifier training and prediction (see duelguard.cli)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from duelguard.commands.common import context_params


def register(app: typer.Typer) -> None:
    """Add this area's commands to the app."""

    @app.command("train")
    def train_cmd(
        ctx: typer.Context,
        iteration: int = typer.Option(0, "--iteration", "-i", help="Loop iteration (0 = seed-only baseline)."),
    ) -> None:
        """Train the classifier (same as `duelguard stage train_classifier -i I`)."""
        import json

        from duelguard.pipeline.spec import run_stage

        params, layout = context_params(ctx)
        summary = run_stage("train_classifier", params, layout, iteration)
        typer.echo(json.dumps(summary, indent=2, default=str))

    @app.command("predict")
    def predict_cmd(
        ctx: typer.Context,
        model: str = typer.Option(..., "--model", "-m", help="Classifier directory or MLflow model URI (models:/duelguard-classifier@champion)."),
        input_path: Optional[Path] = typer.Option(None, "--input", help="JSONL input: one object per line with `text` or `messages`."),
        output_path: Optional[Path] = typer.Option(None, "--output", help="JSONL output (default: standard output)."),
        texts: Optional[list[str]] = typer.Option(None, "--text", "-t", help="A text to score (repeatable); prints JSON lines."),
        batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1, help="Windows per forward pass (default 16)."),
        runtime: str = typer.Option("torch", "--runtime", help="torch | onnx | onnx-int8 (ONNX Runtime; the export is cached per model)."),
    ) -> None:
        """Score texts: input objects plus unsafe_score, unsafe (at the model's thresholds), categories, truncated."""
        import json

        from duelguard.classifier.loader import load_classifier
        from duelguard.classifier.onnx_export import onnx_network
        from duelguard.classifier.predict import read_inputs
        from duelguard.classifier.runtime import RUNTIMES
        from duelguard.fsio import write_jsonl
        from duelguard.registry.models import local_model_dir

        if (input_path is None) == (not texts):
            raise typer.BadParameter("give either --input FILE or one or more --text")
        if runtime not in RUNTIMES:
            raise typer.BadParameter(f"--runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
        # Every line is checked before the model loads, so a bad line fails fast and writes nothing.
        objs = read_inputs(input_path) if input_path is not None else [{"text": t} for t in texts or []]
        # A directory, or an MLflow model URI (models:/name@alias, runs:/...) downloaded once into the cache.
        model_dir = Path(model) if Path(model).is_dir() else local_model_dir(model)
        classifier = load_classifier(model_dir)
        if runtime != "torch":
            params, layout = context_params(ctx)
            classifier.model = onnx_network(classifier, model_dir, layout.weights_cache, runtime, params.serving.onnx_opset)
        outputs = classifier.predict_records(objs, batch_size=batch_size, progress=output_path is not None)
        if output_path is not None:
            typer.echo(f"{output_path}: {write_jsonl(output_path, outputs)} predictions", err=True)
            return
        for out in outputs:
            typer.echo(json.dumps(out, ensure_ascii=False))
