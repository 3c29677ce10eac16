"""The Kubeflow (KFP v2) pipeline `duelguard-loop` of this checkout: the stage spec
(libs/duelguard/pipeline/spec.py) with this repository's params.yaml.

The pipeline's logic lives in the library (duelguard.pipeline.kfp_pipeline builds it from the spec);
this file only names the pipeline object, for KFP's own tooling:

    duelguard pipeline compile      # the usual way: build/pipelines/duelguard-loop.yaml
    kfp dsl compile --py pipelines/duelguard_pipeline.py --output build/pipelines/duelguard-loop.yaml
"""

from pathlib import Path

from duelguard.config import load_params
from duelguard.pipeline.kfp_pipeline import build_pipeline, read_params_json, resolve_image

ROOT = Path(__file__).resolve().parents[1]

duelguard_loop = build_pipeline(
    read_params_json(ROOT / "params.yaml"),
    load_params(ROOT / "params.yaml").profile,
    resolve_image(load_params(ROOT / "params.yaml").kubeflow.image, ROOT),
)
