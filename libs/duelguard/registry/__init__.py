"""MLflow model registry and tracking server.

models.py (a classifier directory <-> an MLflow pyfunc model; local_model_dir for model URIs),
pyfunc.py (the pyfunc wrapper, run only when MLflow loads a logged model), rules.py (promotion rules as
pure functions), registry.py (register / promote / rollback and their stages), lookup.py (registry
reads that tell "not there" from "could not ask"), server.py (start and
stop a local `mlflow server`). Importing this package loads no heavy library.
"""
