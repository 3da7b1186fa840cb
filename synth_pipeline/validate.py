"""Great Expectations (1.x) validation built from a DatasetSchema.

``build_suite(schema)`` turns the schema into an expectation suite; ``validate(df, schema)`` runs it
on a coerced frame (the output of :func:`synth_pipeline.ingest.coerce` / ``load_dataset``) and
returns a :class:`ValidationReport`, raising :class:`DataValidationError` on failure.

Two checks GX cannot express on a pandas frame are computed here in pandas and reported in the
same format as GX results (they appear in ``failures``, ``statistics`` and ``result_json``):

* ``expect_entity_row_count_to_be_at_least``: every entity (or the single series) has at least
  ``schema.min_sequence_length`` rows;
* ``expect_column_values_to_be_constant_within_entity``: static columns are constant within
  every entity (a panel's entity attributes).

Privacy: results use the BASIC result format with ``partial_unexpected_count: 0`` and are
scrubbed afterwards, so no cell value of the frame ever appears in the report, the JSON or the
error message: only column names, counts and percentages (and dtype names for type checks).
Great Expectations is imported lazily (it takes seconds to import).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from synth_pipeline.errors import DataValidationError, SchemaError
from synth_pipeline.schema import ColumnKind, ColumnSpec, DatasetSchema

SAFE_RESULT_FORMAT: dict[str, Any] = {"result_format": "BASIC", "partial_unexpected_count": 0}
ENTITY_LENGTH_CHECK = "expect_entity_row_count_to_be_at_least"
STATIC_CHECK = "expect_column_values_to_be_constant_within_entity"

# Dtype names GX's ExpectColumnValuesToBeInTypeList accepts for numeric pandas columns
# (nullable extension dtypes need their *Dtype class name).
NUMERIC_TYPES = [
    "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
    "float16", "float32", "float64",
    "Int8Dtype", "Int16Dtype", "Int32Dtype", "Int64Dtype",
    "UInt8Dtype", "UInt16Dtype", "UInt32Dtype", "UInt64Dtype",
    "Float32Dtype", "Float64Dtype",
]
# Keys of a GX result that can hold cell values or row indices; removed whatever GX puts there.
_VALUE_KEYS = {
    "partial_unexpected_list", "partial_unexpected_counts", "partial_unexpected_index_list",
    "unexpected_list", "unexpected_index_list", "unexpected_index_query", "unexpected_rows",
    "details",
}
_TYPE_CHECKS = {"expect_column_values_to_be_of_type", "expect_column_values_to_be_in_type_list"}
_SAFE_EXCEPTION = re.compile(r'^(Error: )?The column "[^"]*" in BatchData does not exist\.?$')


@dataclass
class ValidationReport:
    """Outcome of one validation; JSON parts are safe to log as MLflow artifacts (no cell values)."""

    success: bool
    statistics: dict[str, Any]
    failures: list[dict[str, Any]] = field(default_factory=list)
    suite_json: dict[str, Any] = field(default_factory=dict)
    result_json: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        s = self.statistics
        head = (
            f"{s.get('successful_expectations')}/{s.get('evaluated_expectations')} expectations passed"
        )
        if self.success:
            return f"data validation passed: {head}"
        lines = [f"data validation failed: {len(self.failures)} failed expectation(s), {head}:"]
        lines += [f"  - {describe_failure(f)}" for f in self.failures]
        return "\n".join(lines)


# ------------------------------------------------------------------------------------------------
# Great Expectations plumbing (lazy)
# ------------------------------------------------------------------------------------------------
def _gx():
    """Import GX quietly (its INFO logging is noisy when Airflow configured the root logger)."""
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    import great_expectations as gx
    import great_expectations.expectations as gxe

    # this module logger is pinned to INFO by GX itself ("Created temporary directory ... docs site")
    logging.getLogger("great_expectations.data_context.types.base").setLevel(logging.WARNING)
    return gx, gxe


def _context():
    """A fresh in-memory context with progress bars off (also GX's active project context)."""
    gx, _ = _gx()
    from great_expectations.data_context.types.base import ProgressBarsConfig

    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    return ctx


# ------------------------------------------------------------------------------------------------
# schema -> expectations
# ------------------------------------------------------------------------------------------------
def _family_of_dtype(dtype: str | None) -> str | None:
    if not dtype:
        return None
    d = dtype.lower()
    if d in ("str", "string") or d.startswith("string["):
        return "str"
    if d in ("bool", "boolean"):
        return "bool"
    if d == "category":
        return "category"
    if d.startswith("datetime64"):
        return "datetime_tz" if "," in d else "datetime"
    if re.fullmatch(r"u?int\d*|float\d*", d):
        return "numeric"
    return None  # object or unknown: decide from the pinned categories


def _family_of_values(values: list[Any] | None) -> str | None:
    if not values:
        return None
    if all(isinstance(v, bool) for v in values):
        return "bool"
    if all(isinstance(v, str) for v in values):
        return "str"
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return "numeric"
    return None


def _type_expectation(spec: ColumnSpec, schema: DatasetSchema) -> tuple[str, dict[str, Any]] | None:
    """(GX expectation class, kwargs) checking the dtype that ``coerce`` gives this kind."""
    kind = spec.kind
    if kind in (ColumnKind.CONTINUOUS, ColumnKind.INTEGER):
        family = "numeric"
    elif kind == ColumnKind.DATETIME:
        tz_aware = schema.timezone is not None or _family_of_dtype(spec.dtype) == "datetime_tz"
        family = "datetime_tz" if tz_aware else "datetime"
    else:  # categorical, binary, identifier: whatever the source held
        family = _family_of_dtype(spec.dtype)
        if family is None:
            family = _family_of_values(spec.categories)
        if family is None and (spec.dtype or "").lower() == "object":
            family = "str"  # coerce turns text held in object columns into pandas' str dtype
        if family in ("datetime", "datetime_tz"):
            family = None  # a datetime-typed category is unusual; do not guess its zone
    col = spec.name
    if family == "numeric":
        return "ExpectColumnValuesToBeInTypeList", {"column": col, "type_list": list(NUMERIC_TYPES)}
    if family == "str":  # pandas 3: only "str" matches the default string dtype
        return "ExpectColumnValuesToBeOfType", {"column": col, "type_": "str"}
    if family == "bool":
        return "ExpectColumnValuesToBeOfType", {"column": col, "type_": "bool"}
    if family == "category":
        return "ExpectColumnValuesToBeOfType", {"column": col, "type_": "CategoricalDtypeType"}
    if family == "datetime":
        return "ExpectColumnValuesToBeOfType", {"column": col, "type_": "datetime64"}
    if family == "datetime_tz":  # GX observes tz-aware columns as pandas Timestamp
        return "ExpectColumnValuesToBeOfType", {"column": col, "type_": "Timestamp"}
    return None


def expectation_plan(schema: DatasetSchema) -> list[tuple[str, dict[str, Any]]]:
    """The suite as (GX expectation class name, kwargs) pairs, in a stable order."""
    plan: list[tuple[str, dict[str, Any]]] = []
    keys = {schema.time_index, schema.entity_key} - {None}
    outputs = set(schema.output_columns)  # once: a per-column rebuild made 300k columns quadratic
    specs = [c for c in schema.columns if c.name in outputs]
    for c in specs:
        plan.append(("ExpectColumnToExist", {"column": c.name}))
    for c in specs:
        t = _type_expectation(c, schema)
        if t is not None:
            plan.append(t)
        if c.name in keys or not c.nullable:
            plan.append(("ExpectColumnValuesToNotBeNull", {"column": c.name}))
        if c.categories is not None and c.kind in (ColumnKind.CATEGORICAL, ColumnKind.BINARY):
            plan.append(("ExpectColumnValuesToBeInSet", {"column": c.name, "value_set": list(c.categories)}))
        if c.kind in (ColumnKind.CONTINUOUS, ColumnKind.INTEGER) and (c.min is not None or c.max is not None):
            bounds = {k: v for k, v in (("min_value", c.min), ("max_value", c.max)) if v is not None}
            plan.append(("ExpectColumnValuesToBeBetween", {"column": c.name, **bounds}))
    if schema.entity_key is not None:
        plan.append(("ExpectCompoundColumnsToBeUnique", {"column_list": [schema.entity_key, schema.time_index]}))
    else:
        plan.append(("ExpectColumnValuesToBeUnique", {"column": schema.time_index}))
    return plan


def _build(schema: DatasetSchema):
    gx, gxe = _gx()
    suite = gx.ExpectationSuite(name=f"{schema.name}_suite")
    for cls_name, kwargs in expectation_plan(schema):
        try:
            expectation = getattr(gxe, cls_name)(**kwargs)
        except Exception as e:  # pydantic refuses e.g. a text min set on a schema after loading
            where = f"column '{kwargs['column']}'" if "column" in kwargs else "the schema"
            raise SchemaError(
                f"{where}: the schema's settings cannot be turned into the check {cls_name} "
                f"({type(e).__name__}); min/max must be numbers with min <= max, categories plain values"
            ) from None
        suite.add_expectation(expectation)
    suite.meta["schema_fingerprint"] = schema.fingerprint()
    suite.meta["computed_checks"] = [  # evaluated in pandas by synth_pipeline.validate
        {"type": t, "kwargs": kw} for t, kw in _computed_check_plan(schema)
    ]
    return suite


def build_suite(schema: DatasetSchema):
    """Great Expectations suite for data coerced with ``schema`` (a ``gx.ExpectationSuite``).

    Creates a fresh ephemeral GX context first (GX needs an active one to build a suite).
    """
    _context()
    return _build(schema)


def _computed_check_plan(schema: DatasetSchema) -> list[tuple[str, dict[str, Any]]]:
    out: list[tuple[str, dict[str, Any]]] = []
    key = schema.entity_key
    out.append((ENTITY_LENGTH_CHECK, {"column": key, "min_value": int(schema.min_sequence_length)}))
    if key is not None:
        outputs = set(schema.output_columns)
        for c in schema.static_columns:
            if c.name in outputs:
                out.append((STATIC_CHECK, {"column": c.name, "entity_key": key}))
    return out


# ------------------------------------------------------------------------------------------------
# running
# ------------------------------------------------------------------------------------------------
def _norm_kwargs(kwargs: dict[str, Any]) -> str:
    clean = {k: v for k, v in kwargs.items() if k not in ("batch_id", "result_format") and v is not None}
    return json.dumps(clean, sort_keys=True, default=str)


def _pct(part: int, whole: int) -> float:
    return 100.0 * part / whole if whole else 0.0


def _scrub_result(entry: dict[str, Any]) -> dict[str, Any]:
    """Remove anything that can hold cell values; keep counts, percents and dtype names."""
    etype = entry.get("expectation_config", {}).get("type")
    res = entry.get("result") or {}
    res = {k: v for k, v in res.items() if k not in _VALUE_KEYS}
    if "observed_value" in res and etype not in _TYPE_CHECKS:
        res.pop("observed_value")
    entry["result"] = res
    info = entry.get("exception_info")
    if isinstance(info, dict):
        entry["exception_info"] = _scrub_exception_info(info)
    return entry


def _scrub_exception_info(info: dict[str, Any]) -> dict[str, Any]:
    def one(d: dict[str, Any]) -> dict[str, Any]:
        msg = d.get("exception_message")
        if msg is not None and not _SAFE_EXCEPTION.match(str(msg).strip()):
            msg = "<redacted: exception messages can contain data values>"
        return {"raised_exception": bool(d.get("raised_exception")), "exception_message": msg}

    if "raised_exception" in info:  # flat form
        return one(info)
    return {f"metric_{i}": one(v) for i, v in enumerate(info.values()) if isinstance(v, dict)}


def _exception_messages(info: Any) -> list[str]:
    if not isinstance(info, dict):
        return []
    items = [info] if "raised_exception" in info else [v for v in info.values() if isinstance(v, dict)]
    return [str(d.get("exception_message")) for d in items if d.get("raised_exception") or d.get("exception_message")]


def _failure(etype: str, kwargs: dict[str, Any], result: dict[str, Any], details: str = "") -> dict[str, Any]:
    column = kwargs.get("column")
    if column is None and kwargs.get("column_list"):
        column = ", ".join(str(c) for c in kwargs["column_list"])
    return {
        "expectation": etype,
        "column": column,
        "unexpected_count": result.get("unexpected_count"),
        "element_count": result.get("element_count"),
        "unexpected_percent": result.get("unexpected_percent"),
        "details": details,
    }


def describe_failure(f: dict[str, Any]) -> str:
    """One line per failure: expectation, column, counts (never values)."""
    where = f"column '{f['column']}'" if f.get("column") is not None else "the table"
    text = f"{f['expectation']} on {where}"
    if f.get("unexpected_count") is not None:
        pct = f.get("unexpected_percent")
        pct_s = f" ({pct:.3g}%)" if isinstance(pct, (int, float)) and not math.isnan(pct) else ""
        text += f": {f['unexpected_count']} of {f.get('element_count')} unexpected{pct_s}"
    if f.get("details"):
        text += f" [{f['details']}]"
    return text


def _explain_exception(etype: str, kwargs: dict[str, Any], df: pd.DataFrame, messages: list[str]) -> str:
    """Why GX could not evaluate an expectation, in words (its own messages may hold cell values,
    so they are shown only when they match a known value-free form)."""
    safe = [m for m in messages if _SAFE_EXCEPTION.match(m.strip())]
    if safe:
        return safe[0]
    col = kwargs.get("column")
    dtype = str(df[col].dtype) if col in df.columns and isinstance(df[col], pd.Series) else "unknown"
    if etype == "expect_column_values_to_be_between":
        lo, hi = kwargs.get("min_value"), kwargs.get("max_value")
        if lo is not None and hi is not None and lo > hi:
            return (f"could not be evaluated: min {lo!r} is greater than max {hi!r}; swap them or fix the bound "
                    f"in the schema")
        return (f"could not be evaluated: the bounds (min {lo!r}, max {hi!r}) cannot be compared with the "
                f"column's {dtype} values; make min/max numbers and the column numeric (kind continuous/integer)")
    if etype == "expect_column_values_to_be_in_set":
        return (f"could not be evaluated: the pinned categories cannot be compared with the column's {dtype} "
                f"values; re-infer the schema or make the categories the same type as the data")
    return (f"could not be evaluated by Great Expectations on the column's {dtype} values (its message is "
            f"withheld because it can contain data values); check this column's kind and settings in the schema")


def _computed_checks(df: pd.DataFrame, schema: DatasetSchema) -> list[dict[str, Any]]:
    """The pandas-side checks, as GX-like result entries."""
    out = []
    for etype, kwargs in _computed_check_plan(schema):
        meta = {"computed_by": "synth_pipeline.validate (pandas)"}
        entry: dict[str, Any] = {"success": False, "expectation_config": {"type": etype, "kwargs": kwargs, "meta": meta},
                                 "result": {}, "meta": {}}
        need = [c for c in (kwargs.get("column"), kwargs.get("entity_key"), schema.time_index) if c is not None]
        absent = [c for c in need if c not in df.columns]
        if absent:
            entry["exception_info"] = {"raised_exception": True,
                                       "exception_message": f"column(s) {absent} missing from the data"}
            out.append(entry)
            continue
        if etype == ENTITY_LENGTH_CHECK:
            key = kwargs["column"]
            sizes = (df.groupby(key, sort=False, observed=True, dropna=False).size() if key is not None
                     else pd.Series([len(df)]))
            if sizes.empty:  # no rows at all: one (empty) series that is too short
                sizes = pd.Series([0])
            short = int((sizes < kwargs["min_value"]).sum())
            entry["result"] = {
                "element_count": int(len(sizes)),
                "unexpected_count": short,
                "unexpected_percent": _pct(short, len(sizes)),
                "observed_value": int(sizes.min()),  # the shortest length: a count, not a value
            }
            entry["success"] = short == 0
        elif etype == STATIC_CHECK:
            per = df.groupby(kwargs["entity_key"], sort=False, observed=True, dropna=False)[kwargs["column"]].nunique(
                dropna=False)
            bad = int((per > 1).sum())
            entry["result"] = {"element_count": int(len(per)), "unexpected_count": bad,
                               "unexpected_percent": _pct(bad, len(per))}
            entry["success"] = bad == 0
        out.append(entry)
    return out


def validate(df: pd.DataFrame, schema: DatasetSchema, *, raise_on_failure: bool = True) -> ValidationReport:
    """Run the schema's expectations on a coerced frame.

    Raises DataValidationError (message lists every failed expectation with column and counts,
    ``.failures`` the same as dicts) unless ``raise_on_failure=False``.
    """
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"validate() needs a pandas DataFrame, got {type(df).__name__}")
    ctx = _context()
    suite = _build(schema)
    batch_def = (
        ctx.data_sources.add_pandas(name="synth_pipeline")
        .add_dataframe_asset(name=schema.name or "dataset")
        .add_batch_definition_whole_dataframe(name="whole")
    )
    batch = batch_def.get_batch(batch_parameters={"dataframe": df})
    res = batch.validate(suite, result_format=dict(SAFE_RESULT_FORMAT))
    result_json = res.to_json_dict()

    by_key: dict[tuple[str, str], dict[str, Any]] = {}
    for entry in result_json.get("results", []):
        cfg = entry.get("expectation_config", {})
        by_key[(cfg.get("type"), _norm_kwargs(cfg.get("kwargs", {})))] = _scrub_result(entry)

    failures: list[dict[str, Any]] = []
    for exp in suite.expectations:  # suite order; results matched by type + kwargs, never position
        cfg = exp.configuration
        etype, kwargs = cfg.type, dict(cfg.kwargs)
        entry = by_key.get((etype, _norm_kwargs(kwargs)))
        if entry is None:
            failures.append(_failure(etype, kwargs, {}, "no result returned by Great Expectations"))
            continue
        if entry.get("success"):
            continue
        result = entry.get("result") or {}
        details = ""
        cols = kwargs.get("column_list") or [kwargs.get("column")]
        absent = [c for c in cols if c is not None and c not in df.columns]
        if absent:
            details = "column missing from the data" if len(absent) == 1 else f"columns {absent} missing from the data"
        elif _exception_messages(entry.get("exception_info")):
            details = _explain_exception(etype, kwargs, df, _exception_messages(entry.get("exception_info")))
        elif etype in _TYPE_CHECKS and "observed_value" in result:
            expected = kwargs.get("type_") or "numeric"
            details = f"observed dtype {result['observed_value']}, expected {expected}"
        failures.append(_failure(etype, kwargs, result, details))

    computed = _computed_checks(df, schema)
    for entry in computed:
        if entry["success"]:
            continue
        cfg = entry["expectation_config"]
        kw = cfg["kwargs"]
        if "exception_info" in entry:
            details = entry["exception_info"]["exception_message"]
        elif cfg["type"] == ENTITY_LENGTH_CHECK:
            what = "entities" if kw["column"] is not None else "series"
            details = (f"{what} need at least {kw['min_value']} rows (schema min_sequence_length); "
                       f"the shortest has {entry['result'].get('observed_value')}")
        else:
            details = f"static column varies within some '{kw['entity_key']}' entities"
        failures.append(_failure(cfg["type"], kw, entry["result"], details))
    result_json["results"] = list(result_json.get("results", [])) + computed

    gx_stats = dict(result_json.get("statistics") or {})
    evaluated = int(gx_stats.get("evaluated_expectations", 0)) + len(computed)
    successful = int(gx_stats.get("successful_expectations", 0)) + sum(1 for e in computed if e["success"])
    statistics = {
        "evaluated_expectations": evaluated,
        "successful_expectations": successful,
        "unsuccessful_expectations": evaluated - successful,
        "success_percent": _pct(successful, evaluated),
    }
    success = bool(res.success) and all(e["success"] for e in computed) and not failures
    result_json["statistics"] = statistics
    result_json["success"] = success
    suite_json = suite.to_json_dict()
    report = ValidationReport(
        success=success,
        statistics=statistics,
        failures=failures,
        suite_json=json.loads(json.dumps(suite_json, default=str)),
        result_json=json.loads(json.dumps(result_json, default=str)),
    )
    if not success and raise_on_failure:
        raise DataValidationError(
            f"dataset '{schema.name}': " + report.summary()
            + "\nFix the source, or review the pinned schema (categories, min/max, nullable, "
              "min_sequence_length) if the data legitimately changed.",
            failures=failures,
        )
    return report
