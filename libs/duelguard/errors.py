"""Errors that describe bad input or a missing resource; the CLI prints them without a traceback."""

from __future__ import annotations

from duelguard.config import ConfigError
from duelguard.fsio import DataError


class BackboneError(RuntimeError):
    """A backbone could not be resolved (missing package, checksum mismatch, bad path)."""


class ModelNotFoundError(LookupError):
    """A model directory, MLflow model URI or served model does not exist."""


class ServingError(RuntimeError):
    """The inference server is unreachable, not ready, or answered with an error."""


class RegistryError(RuntimeError):
    """The model registry could not be asked (server down, bad answer): never read as "no model"."""


class PipelineError(RuntimeError):
    """The Kubeflow pipeline cannot be compiled, run or submitted as asked; the message says why and what to do."""


UserError = (DataError, ConfigError, BackboneError, ModelNotFoundError, RegistryError, ServingError, PipelineError,
             FileNotFoundError)
