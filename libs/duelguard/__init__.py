"""duelguard: a multilingual LLM guardrail factory.

A generator LLM and a 12-category guardrail classifier co-evolve in a two-player loop; DVC,
Kubeflow, MLflow and Triton are thin callers of the functions in this package. Heavy libraries
(torch, transformers, mlflow, ...) are imported lazily inside functions so that the CLI starts fast.
"""

__version__ = "0.1.0"
