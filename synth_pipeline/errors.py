"""Typed errors. Every message names the file/column at fault and the fix; the CLI maps them to exit 2."""

from __future__ import annotations


class SynthPipelineError(Exception):
    """Base class: bad input or configuration that the user can fix (CLI exit code 2)."""

    exit_code = 2


class ConfigError(SynthPipelineError, ValueError):
    """A configuration value or override is unknown or out of range."""


class SchemaError(SynthPipelineError, ValueError):
    """The data does not fit the schema, or the schema itself is inconsistent."""


class IngestError(SynthPipelineError, ValueError):
    """A source cannot be read or parsed (empty, wrong encoding, unparseable dates, ...)."""


class PIIError(SchemaError):
    """A column is (or looks like) personal data and has not been dropped."""


class DataValidationError(SynthPipelineError, ValueError):
    """Great Expectations validation failed; ``failures`` lists every failed expectation."""

    def __init__(self, message: str, failures: list[dict] | None = None):
        super().__init__(message)
        self.failures = failures or []


class ConditioningError(SynthPipelineError, ValueError):
    """Conditions passed to ``sample`` do not match the trained model."""


class ModelFileError(SynthPipelineError, OSError):
    """A model directory is missing files or was written by an incompatible version."""
