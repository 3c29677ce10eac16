"""The pipeline: one declaration per stage, and the runners that read it.

spec.py (the stage table: function, iterations, params, inputs, outputs, side effects; run_stage),
codedeps.py (the library modules a stage's function imports: its code dependencies),
dvc.py (dvc.yaml generated from the spec, its golden check, `duelguard loop` = `dvc repro`),
kfp_glue.py (what one Kubeflow component does at run time; no kfp import),
kfp_pipeline.py (the Kubeflow pipeline built from the spec: compile, local run, submit).
Importing this package loads no heavy library.
"""
