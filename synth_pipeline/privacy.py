"""What may leave the training boundary besides the model: redacted copies of the validation
artifacts and of the schema (the model's own protections live in ``synth_pipeline.transformers``).

Great Expectations results carry real values (``partial_unexpected_list``, observed min/max, value
sets pinned from the data); the MLflow run gets these copies instead, which keep every
expectation, its column, its verdict and its counts.
"""

from __future__ import annotations

from typing import Any

from synth_pipeline.errors import ConfigError

# result / kwargs keys that hold data values; replaced by a count or a marker
_VALUE_KEYS = {
    "partial_unexpected_list", "partial_unexpected_counts", "partial_unexpected_index_list", "unexpected_list",
    "unexpected_index_list", "unexpected_index_query", "unexpected_rows", "observed_value", "details",
    "value", "values", "exception_message", "exception_traceback", "column_set",
}
_BOUND_KEYS = {"min_value", "max_value"}
REDACTED = "<redacted: real values are not logged>"


# expectations whose bounds are settings, not data (the schema's min_sequence_length)
_SETTING_EXPECTATIONS = {"expect_entity_row_count_to_be_at_least"}


def redact(obj: Any, _keep_bounds: bool = False) -> Any:
    """A deep copy of a GX suite / result JSON without any data value (counts and verdicts kept)."""
    if isinstance(obj, dict):
        keep = _keep_bounds or obj.get("type") in _SETTING_EXPECTATIONS or obj.get(
            "expectation_type") in _SETTING_EXPECTATIONS
        out: dict[str, Any] = {}
        for k, v in obj.items():
            if k == "value_set" and isinstance(v, list | tuple):
                out[k] = f"<{len(v)} pinned values, not logged>"
            elif k in _BOUND_KEYS and v is not None and not keep:
                out[k] = "<pinned>"
            elif k in _VALUE_KEYS and v is not None:
                out[k] = REDACTED
            else:
                out[k] = redact(v, keep)
        return out
    if isinstance(obj, list):
        return [redact(v, _keep_bounds) for v in obj]
    return obj


def check_protection(k: Any, clip_rank: Any, rare_token: Any) -> tuple[int, int]:
    """The privacy protection's settings (transformers/protection.py); returns clip_rank as a tuple.
    Here, not in ``transformers.protection``: checking a config must import no numpy/pandas (DAG parse
    time), and ``config`` and ``transformers`` both read it without importing each other."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ConfigError(f"model.protect_k must be an integer >= 1 (default 5), got {k!r}")
    try:
        lo, hi = (int(v) for v in clip_rank)
    except (TypeError, ValueError):
        raise ConfigError(f"model.clip_rank must be two ranks [lo, hi] (default [5, 7]), got {clip_rank!r}") from None
    if not 1 <= lo <= hi:
        raise ConfigError(f"model.clip_rank must be two ranks 1 <= lo <= hi (default [5, 7]), got {[lo, hi]}")
    if not isinstance(rare_token, str) or not rare_token:
        raise ConfigError("model.rare_token must be non-empty text (default '_RARE_')")
    return lo, hi
