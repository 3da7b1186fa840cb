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


class OutputError(SynthPipelineError, OSError):
    """An output path cannot be used: it exists (pass ``--force``), is a folder, lies inside a model
    folder, has an unsupported suffix, or its folder cannot be written."""


class UnsafeQueryError(IngestError):
    """A SQL source's query is not exactly one read-only SELECT (or WITH ... SELECT) statement."""


class ReleaseError(SynthPipelineError, OSError):
    """A release cannot be published: bad dataset name / release id, unwritable release root,
    or a different release already exists for the logical date (pass ``overwrite=True``)."""


class ReleaseStoreError(ReleaseError):
    """A release root on an object store (``s3://``, ``gs://``, an fsspec URI) cannot be used: a
    malformed or unsupported URI, credentials inside the URI, a missing bucket, refused credentials
    or an unreachable endpoint. The message names the URI and the setting to fix."""


class TrackingError(SynthPipelineError, RuntimeError):
    """The MLflow tracking server or model registry cannot be reached or refused a request."""


class GateFailedError(SynthPipelineError):
    """The release gate failed: the model and audit are recorded, the release is quarantined.

    ``result`` holds the pipeline's ReleaseResult (run id, model URI, quarantine path, checks)."""

    exit_code = 3

    def __init__(self, message: str, result: object | None = None):
        super().__init__(message)
        self.result = result


class UngatedModelError(SynthPipelineError, PermissionError):
    """A registered model whose release gate failed (or never ran) was asked to generate."""
