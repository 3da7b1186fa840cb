"""MLflow integration: a ``synth_pipeline`` model flavor (with a pyfunc), run logging helpers and
the registry conventions (the design, `../shared/ARCHITECTURE.md`, "MLflow conventions").

Flavor
------
``save_model(synthesizer, path)`` writes an MLflow model directory::

    MLmodel            flavors: synth_pipeline (package version, schema fingerprint) + python_function
    synthesizer/       Synthesizer.save() output: encoder JSON, model config JSON, weights, schema.yaml
    requirements.txt   pinned: mlflow, synth-pipeline, torch, numpy, pandas, pyarrow, scipy, pyyaml
    conda.yaml, python_env.yaml

``log_model`` logs it to the active run (optionally registering a version), ``load_model`` returns
the :class:`~synth_pipeline.synthesizer.Synthesizer`, and ``mlflow.pyfunc.load_model`` returns a
pyfunc whose ``predict`` takes a DataFrame of *requests*, one row each:

=============  ========  ===========================================================
column         required  meaning
=============  ========  ===========================================================
n_sequences    yes       number of synthetic sequences (entities / windows) to generate
seed           no        random seed of this request (default: model seed + row number)
<static col>   no        a static attribute fixed for every sequence of the request
=============  ========  ===========================================================

and returns one synthetic table: a ``request_id`` column (row number of the request) followed by
the dataset's output columns. The loading environment needs ``synth-pipeline`` installed (it is
the flavor's ``loader_module``); everything else is pinned in ``requirements.txt``. Nothing in a
model directory holds a training row: the encoder keeps only aggregates.

Run logging and registry
------------------------
:func:`connect` checks the tracking server before any work (fails fast with
:class:`~synth_pipeline.errors.TrackingError`), :func:`log_history` turns the model's loss history
into step metrics, :func:`flat_metrics` turns ``metrics.json`` into final metrics,
:func:`airflow_tags` reads Airflow ids from the task environment, :func:`promote` moves the
``champion`` alias and tags the version ``gate=passed|failed``.
"""

from __future__ import annotations

import math
import os
import re
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd

from synth_pipeline import __version__
from synth_pipeline.errors import ConditioningError, TrackingError

FLAVOR_NAME = "synth_pipeline"
DATA_SUBPATH = "synthesizer"
REQUEST_COLUMNS = ("n_sequences", "seed")
MAX_SEQUENCES_PER_REQUEST = 1_000_000
CANDIDATE, CHAMPION = "candidate", "champion"
# a model whose release gate did not pass is not loaded for generation unless this is set, as
# load_model(uri, allow_ungated=True), mlflow.pyfunc.load_model(uri, model_config={"allow_ungated": True})
# or the environment variable SYNTH_PIPELINE_ALLOW_UNGATED=1
ALLOW_UNGATED = "allow_ungated"
ALLOW_UNGATED_ENV = "SYNTH_PIPELINE_ALLOW_UNGATED"
_PINNED = ("torch", "numpy", "pandas", "pyarrow", "scipy", "pyyaml")


# ------------------------------------------------------------------------------------------------
# requirements and signature
# ------------------------------------------------------------------------------------------------
def _installed(dist: str) -> str | None:
    try:
        return metadata.version(dist).split("+")[0]  # "2.13.0+cpu" -> "2.13.0" (installable pin)
    except metadata.PackageNotFoundError:
        return None


def default_pip_requirements() -> list[str]:
    """Pinned requirements recorded with every model (mlflow is added by MLflow itself)."""
    reqs = [f"synth-pipeline=={__version__}"]
    for dist in _PINNED:
        v = _installed(dist)
        reqs.append(f"{dist}=={v}" if v else dist)
    return reqs


def _static_spec_type(spec) -> str | None:
    from synth_pipeline.schema import ColumnKind

    if spec.kind in (ColumnKind.CONTINUOUS, ColumnKind.INTEGER):
        return "double"
    cats = spec.categories or []
    if cats and all(isinstance(c, bool) for c in cats):
        return "boolean"
    if (spec.dtype or "").lower() in ("str", "string", "object") or (cats and all(isinstance(c, str) for c in cats)):
        return "string"
    return None


def model_signature(synthesizer, sample: pd.DataFrame | None = None):
    """Input: the request columns (static attributes optional); output: the synthetic table."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema
    from mlflow.types.utils import _infer_schema

    cols = [ColSpec("long", "n_sequences"), ColSpec("long", "seed", required=False)]
    for spec in synthesizer.schema.static_columns:
        t = _static_spec_type(spec)
        if t is not None:
            cols.append(ColSpec(t, spec.name, required=False))
    if sample is None:
        sample = _predict(synthesizer, pd.DataFrame({"n_sequences": [1], "seed": [0]}))
    with warnings.catch_warnings():  # "integer columns cannot represent missing values": outputs only
        warnings.simplefilter("ignore", UserWarning)
        outputs = _infer_schema(sample)
    return ModelSignature(inputs=Schema(cols), outputs=outputs)


# ------------------------------------------------------------------------------------------------
# flavor
# ------------------------------------------------------------------------------------------------
def save_model(
    synthesizer,
    path: str | Path,
    mlflow_model=None,
    signature=None,
    pip_requirements: list[str] | None = None,
    extra_pip_requirements: list[str] | None = None,
    metadata: dict[str, Any] | None = None,
    code_paths: list[str] | None = None,
    **_: Any,
) -> Path:
    """Save a fitted Synthesizer as an MLflow model directory at ``path`` (must not exist or be empty)."""
    import yaml
    from mlflow.models import Model
    from mlflow.models.model import MLMODEL_FILE_NAME
    from mlflow.utils.environment import (
        _CONDA_ENV_FILE_NAME,
        _CONSTRAINTS_FILE_NAME,
        _PYTHON_ENV_FILE_NAME,
        _REQUIREMENTS_FILE_NAME,
        _process_pip_requirements,
        _PythonEnv,
        _validate_env_arguments,
    )
    from mlflow.utils.model_utils import _validate_and_copy_code_paths, _validate_and_prepare_target_save_path

    from mlflow import pyfunc

    _validate_env_arguments(None, pip_requirements, extra_pip_requirements)
    path = Path(path).resolve()
    _validate_and_prepare_target_save_path(str(path))
    code_dir = _validate_and_copy_code_paths(code_paths, str(path))
    synthesizer.save(path / DATA_SUBPATH)
    if mlflow_model is None:
        mlflow_model = Model()
    if signature is None:
        signature = model_signature(synthesizer)
    if signature is not False:
        mlflow_model.signature = signature
    if metadata:
        mlflow_model.metadata = metadata
    pyfunc.add_to_model(
        mlflow_model, loader_module="synth_pipeline.tracking", data=DATA_SUBPATH, code=code_dir,
        conda_env=_CONDA_ENV_FILE_NAME, python_env=_PYTHON_ENV_FILE_NAME,
        model_config={ALLOW_UNGATED: False},  # the documented override (see load_model)
    )
    mlflow_model.add_flavor(
        FLAVOR_NAME, package_version=__version__, data=DATA_SUBPATH, code=code_dir,
        schema_fingerprint=synthesizer.schema_fingerprint, dataset=synthesizer.schema.name,
    )
    mlflow_model.save(str(path / MLMODEL_FILE_NAME))
    default = default_pip_requirements() if pip_requirements is None else None
    conda_env, reqs, constraints = _process_pip_requirements(default, pip_requirements, extra_pip_requirements)
    (path / _CONDA_ENV_FILE_NAME).write_text(yaml.safe_dump(conda_env, default_flow_style=False), encoding="utf-8")
    if constraints:
        (path / _CONSTRAINTS_FILE_NAME).write_text("\n".join(constraints), encoding="utf-8")
    (path / _REQUIREMENTS_FILE_NAME).write_text("\n".join(reqs), encoding="utf-8")
    _PythonEnv.current().to_yaml(str(path / _PYTHON_ENV_FILE_NAME))
    return path


def log_model(
    synthesizer,
    name: str = "synthesizer",
    registered_model_name: str | None = None,
    signature=None,
    pip_requirements: list[str] | None = None,
    extra_pip_requirements: list[str] | None = None,
    metadata: dict[str, Any] | None = None,
    tags: dict[str, Any] | None = None,
    await_registration_for: int = 300,
    code_paths: list[str] | None = None,
):
    """Log to the active run (``mlflow.models.model.ModelInfo``); registers a version when a
    ``registered_model_name`` is given (``info.registered_model_version``)."""
    import sys

    from mlflow.models import Model

    return Model.log(
        artifact_path=None, name=name, flavor=sys.modules[__name__], flavor_name=FLAVOR_NAME,
        registered_model_name=registered_model_name, await_registration_for=await_registration_for,
        metadata=metadata, tags=tags, synthesizer=synthesizer, signature=signature,
        pip_requirements=pip_requirements, extra_pip_requirements=extra_pip_requirements, code_paths=code_paths,
    )


def load_model(model_uri: str, dst_path: str | None = None, device: str = "auto", allow_ungated: bool = False):
    """The Synthesizer behind ``model_uri`` (``models:/name@alias``, ``runs:/...``, a local path).

    A model registered by a release whose gate failed (or never ran: ``gate=pending``) is refused
    with :class:`UngatedModelError` unless ``allow_ungated=True`` (for inspecting a quarantined
    model deliberately; never for publishing)."""
    from mlflow.tracking.artifact_utils import _download_artifact_from_uri
    from mlflow.utils.model_utils import _add_code_from_conf_to_system_path, _get_flavor_configuration

    try:
        local = _download_artifact_from_uri(artifact_uri=model_uri, output_path=dst_path)
    except Exception as e:  # MlflowException, OSError
        raise TrackingError(f"cannot download model '{model_uri}': {_short(e)}") from None
    conf = _get_flavor_configuration(model_path=local, flavor_name=FLAVOR_NAME)
    check_gate(local, allow_ungated)
    _add_code_from_conf_to_system_path(local, conf)
    return _load_synthesizer(os.path.join(local, conf.get("data", DATA_SUBPATH)), device)


def gate_status(model_dir: str | Path) -> tuple[str | None, str]:
    """The release-gate verdict recorded for the run that logged ``model_dir`` (its registered
    versions' ``gate`` tags, else the run's), and what was asked: ``(None, ...)`` when the model
    was not logged by a release or the tracking server cannot tell (a plain local copy)."""
    import yaml

    try:
        meta = yaml.safe_load(Path(model_dir, "MLmodel").read_text(encoding="utf-8")) or {}
        run_id = meta.get("run_id")
    except (OSError, yaml.YAMLError):
        return None, "no MLmodel file"
    if not run_id or not re.fullmatch(r"[0-9a-f]{32}", str(run_id)):
        return None, "not logged to a run"
    try:
        from mlflow import MlflowClient

        client = MlflowClient()
        versions = client.search_model_versions(f"run_id='{run_id}'")
        tags = [(f"{v.name} version {v.version}", v.tags.get("gate")) for v in versions if v.tags.get("gate")]
        if not tags:
            gate = client.get_run(run_id).data.tags.get("gate")
            tags = [(f"run {run_id}", gate)] if gate else []
    except Exception:  # noqa: BLE001 - no server / no registry: the registry cannot vouch either way
        return None, "tracking server not reachable"
    for where, gate in tags:
        if gate != "passed":
            return gate, where
    return ("passed", tags[0][0]) if tags else (None, "no gate recorded")


def check_gate(model_dir: str | Path, allow_ungated: bool = False) -> None:
    """Refuse a model whose release gate failed or never ran (see :func:`load_model`)."""
    if allow_ungated or os.environ.get(ALLOW_UNGATED_ENV, "").strip().lower() in ("1", "true", "yes"):
        return
    gate, where = gate_status(model_dir)
    if gate is not None and gate != "passed":
        from synth_pipeline.errors import UngatedModelError

        raise UngatedModelError(
            f"{where} has gate={gate}: a model whose release gate did not pass is not loaded for generation "
            f"(its samples were never audited, or failed the audit). Use the champion "
            f"(models:/<dataset>-synthesizer@champion). To inspect it deliberately: "
            f"tracking.load_model(uri, allow_ungated=True), mlflow.pyfunc.load_model(uri, model_config="
            f"{{'allow_ungated': True}}) or {ALLOW_UNGATED_ENV}=1"
        )


def _load_synthesizer(path: str, device: str = "auto"):
    from synth_pipeline.synthesizer import Synthesizer

    return Synthesizer.load(path, device=device)


def _load_pyfunc(path: str, model_config: dict[str, Any] | None = None) -> SynthesizerPyfunc:
    """Called by ``mlflow.pyfunc.load_model`` with the ``synthesizer/`` data path (gate-checked)."""
    check_gate(Path(path).parent, bool((model_config or {}).get(ALLOW_UNGATED, False)))
    return SynthesizerPyfunc(_load_synthesizer(path))


class SynthesizerPyfunc:
    """pyfunc implementation: ``predict(requests) -> synthetic table`` (see module docstring)."""

    def __init__(self, synthesizer):
        self.synthesizer = synthesizer

    def get_raw_model(self):
        return self.synthesizer

    def predict(self, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        return _predict(self.synthesizer, model_input)


def _predict(syn, requests: Any) -> pd.DataFrame:
    req = requests if isinstance(requests, pd.DataFrame) else pd.DataFrame(requests)
    if "n_sequences" not in req.columns:
        raise ConditioningError("each request needs 'n_sequences' (number of synthetic sequences to generate)")
    static = [c.name for c in syn.schema.static_columns]
    unknown = sorted(set(req.columns) - set(REQUEST_COLUMNS) - set(static))
    if unknown:
        raise ConditioningError(
            f"unknown request column(s) {unknown}; valid: n_sequences, seed and static attributes {static}"
        )
    base_seed = int(syn.config.seed)
    parts = []
    for i, row in enumerate(req.to_dict("records")):
        n = row["n_sequences"]
        if n is None or (isinstance(n, float) and not n.is_integer()) or not 1 <= int(n) <= MAX_SEQUENCES_PER_REQUEST:
            raise ConditioningError(
                f"request {i}: n_sequences must be an integer in [1, {MAX_SEQUENCES_PER_REQUEST}], got {n!r}"
            )
        n = int(n)
        seed = row.get("seed")
        seed = base_seed + i if seed is None or (isinstance(seed, float) and math.isnan(seed)) else int(seed)
        fixed = {c: row[c] for c in static if c in row and not _missing(row[c])}
        if fixed:
            out = syn.sample(conditions=pd.DataFrame({c: [v] * n for c, v in fixed.items()}), seed=seed)
        else:
            out = syn.sample(n, seed=seed)
        out.insert(0, "request_id", i)
        parts.append(out)
    if not parts:
        raise ConditioningError("no requests: pass at least one row with n_sequences")
    return pd.concat(parts, ignore_index=True)


def _missing(v: Any) -> bool:
    if v is None:
        return True
    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):
        return False


# ------------------------------------------------------------------------------------------------
# tracking server
# ------------------------------------------------------------------------------------------------
def _short(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    first = text[0] if text else type(e).__name__
    return f"{type(e).__name__}: {first[:300]}"


def redact_uri(uri: str) -> str:
    from synth_pipeline.ingest import _redact

    return _redact(uri)


def check_reachable(tracking_uri: str, timeout: float = 10.0) -> None:
    """Fail fast (TrackingError) when an HTTP tracking server does not answer ``/health``, or a
    local store's folder cannot be written. Runs before any training."""
    from synth_pipeline.tracking_uri import check_scheme, health_request

    check_scheme(tracking_uri)  # ftp://... -> TrackingError listing the valid schemes
    if tracking_uri.startswith(("http://", "https://")):
        try:  # user:pw@ in the URI goes into a basic-auth header, not the URL (tracking_uri.py)
            with urllib.request.urlopen(health_request(tracking_uri), timeout=timeout) as resp:  # noqa: S310
                if resp.status != 200:
                    raise TrackingError(f"MLflow tracking server {redact_uri(tracking_uri)} answered /health "
                                        f"with HTTP {resp.status}")
        except urllib.error.HTTPError as e:
            raise TrackingError(f"MLflow tracking server {redact_uri(tracking_uri)} answered /health with "
                                f"HTTP {e.code}; check the server logs") from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise TrackingError(
                f"MLflow tracking server {redact_uri(tracking_uri)} is unreachable ({reason}); start it "
                f"(see mlflow/README.md) or point MLFLOW_TRACKING_URI / the config's mlflow.tracking_uri "
                f"at a running one. Nothing was trained or published."
            ) from None
    elif tracking_uri.startswith("sqlite:///"):
        db = Path(tracking_uri[len("sqlite:///"):])
        folder = db.parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise TrackingError(f"MLflow store folder '{folder}' cannot be created: {e.strerror}") from None
        if not os.access(folder, os.W_OK):
            raise TrackingError(f"MLflow store folder '{folder}' is not writable")


@contextmanager
def connect(tracking_uri: str) -> Iterator[Any]:
    """Point MLflow (tracking + registry) at ``tracking_uri`` for the block; yields an MlflowClient.

    ``mlflow.set_tracking_uri`` / ``set_registry_uri`` also export ``MLFLOW_TRACKING_URI`` /
    ``MLFLOW_REGISTRY_URI`` to the environment; both the globals and the variables are restored
    afterwards, so nothing leaks into later code or subprocesses."""
    import mlflow.tracking._model_registry.utils as registry_utils
    import mlflow.tracking._tracking_service.utils as tracking_utils
    from mlflow.tracking import MlflowClient

    import mlflow
    from synth_pipeline.tracking_uri import credentials_env

    check_reachable(tracking_uri)
    env_keys = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
    saved_env = {k: os.environ.get(k) for k in env_keys}
    saved_t, saved_r = tracking_utils._tracking_uri, registry_utils._registry_uri
    # user:pw@ moves to MLFLOW_TRACKING_USERNAME/PASSWORD for the block: never in a URL MLflow prints
    with credentials_env(tracking_uri) as tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_registry_uri(tracking_uri)
        try:
            yield MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        finally:
            mlflow.set_tracking_uri(saved_t)
            registry_utils._registry_uri = saved_r
            for k, v in saved_env.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


@contextmanager
def mlflow_errors(what: str) -> Iterator[None]:
    """Turn MLflow/network failures inside the block into one TrackingError naming ``what``."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowException as e:
        raise TrackingError(f"MLflow failed while {what}: {_short(e)}") from None
    except (ConnectionError, TimeoutError) as e:
        raise TrackingError(f"MLflow unreachable while {what}: {_short(e)}") from None


# ------------------------------------------------------------------------------------------------
# run content
# ------------------------------------------------------------------------------------------------
AIRFLOW_ENV = {
    "airflow.dag_id": "AIRFLOW_CTX_DAG_ID",
    "airflow.run_id": "AIRFLOW_CTX_DAG_RUN_ID",
    "airflow.task_id": "AIRFLOW_CTX_TASK_ID",
    "airflow.try_number": "AIRFLOW_CTX_TRY_NUMBER",
    "airflow.map_index": "AIRFLOW_CTX_MAP_INDEX",
}


def airflow_tags(context: Mapping[str, Any] | None = None) -> dict[str, str]:
    """Airflow ids as run tags: from ``context`` (keys dag_id, run_id, task_id, try_number,
    map_index) when given, else from the ``AIRFLOW_CTX_*`` variables Airflow sets in task processes."""
    out: dict[str, str] = {}
    for tag, env in AIRFLOW_ENV.items():
        key = tag.split(".", 1)[1]
        v = (context or {}).get(key) if context else os.environ.get(env)
        if v not in (None, ""):
            out[tag] = str(v)
    return out


def flat_params(d: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested mapping -> ``{"a.b": "value"}`` (MLflow params are strings, 6000 chars max)."""
    out: dict[str, str] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(flat_params(v, key + "."))
        else:
            out[key] = str(v)[:6000]
    return out


def flat_metrics(d: Any, prefix: str = "") -> dict[str, float]:
    """Every finite number in a nested metrics mapping -> ``{"a.b": value}`` (lists are skipped:
    per-column details stay in metrics.json)."""
    out: dict[str, float] = {}
    if isinstance(d, Mapping):
        for k, v in d.items():
            out.update(flat_metrics(v, f"{prefix}{k}."))
    elif isinstance(d, bool):
        out[prefix[:-1]] = float(d)
    elif isinstance(d, (int, float)) and math.isfinite(float(d)):
        out[prefix[:-1]] = float(d)
    return {_metric_key(k): v for k, v in out.items() if k and len(k) <= 250}


def _metric_key(key: str) -> str:
    """MLflow keys allow letters, digits, ``_ - . / space``; column names may hold others ("CO(GT)")."""
    return re.sub(r"[^A-Za-z0-9_\-. /]", "_", key)


def log_history(history: list[Mapping[str, Any]]) -> int:
    """Log the model's per-interval losses as step metrics (``vae/loss`` at step 100, ...)."""
    from mlflow.entities import Metric

    import mlflow

    client = mlflow.MlflowClient()
    run = mlflow.active_run()
    if run is None:
        raise TrackingError("log_history needs an active MLflow run")
    import time as _t

    now = int(_t.time() * 1000)
    metrics = []
    for rec in history:
        step = int(rec.get("step", 0))
        for k, v in rec.items():
            if k == "step" or not isinstance(v, (int, float)) or not math.isfinite(float(v)):
                continue
            metrics.append(Metric(key=_metric_key(str(k)), value=float(v), timestamp=now, step=step))
    for i in range(0, len(metrics), 1000):
        client.log_batch(run.info.run_id, metrics=metrics[i:i + 1000])
    return len(metrics)


def log_json(obj: Any, artifact_file: str) -> None:
    import json

    import mlflow

    mlflow.log_text(json.dumps(obj, indent=2, sort_keys=True, default=str), artifact_file)


def ensure_experiment(client, name: str, tracking_uri: str):
    """The experiment ``name``, created if needed. For a local ``sqlite:///`` store its artifacts go
    next to the database (``<db folder>/mlartifacts``), not into the current directory."""
    exp = client.get_experiment_by_name(name)
    if exp is None:
        location = None
        if tracking_uri.startswith("sqlite:///"):
            location = (Path(tracking_uri[len("sqlite:///"):]).parent / "mlartifacts").resolve().as_uri()
        client.create_experiment(name, artifact_location=location)
        exp = client.get_experiment_by_name(name)
    return exp


def privacy_tags(report: Mapping[str, Any] | None) -> dict[str, str]:
    """Run / version tags of a model's DP guarantee (``TimeAutoDiff.dp_report``); {} without DP."""
    if not report:
        return {}
    return {"differential_privacy": "on", "dp_epsilon": f"{report['epsilon']:.4g}",
            "dp_delta": f"{report['delta']:.3g}", "dp_accountant": str(report["accountant"])}


def tag_version(client, name: str, version: str, tags: Mapping[str, str]) -> None:
    for k, v in tags.items():
        client.set_model_version_tag(name, version, k, str(v))


def set_candidate(client, name: str, version: str) -> None:
    """``candidate``: the newest *evaluated* version (set once the gate has decided, pass or fail)."""
    client.set_registered_model_alias(name, CANDIDATE, version)


def promote(client, name: str, version: str, passed: bool) -> bool:
    """Gate verdict on the registry: ``gate=passed``, or ``gate=failed`` and ``champion`` stays.
    ``champion`` follows the newest passing *logical date*: a backfill (an ``--overwrite`` of an
    older date) is tagged passed but does not move it back. Returns whether ``champion`` moved."""
    client.set_model_version_tag(name, version, "gate", "passed" if passed else "failed")
    if not passed:
        return False
    mine = client.get_model_version(name, version).tags.get("logical_date", "")
    current = champion_version(client, name)
    if current is not None and current != str(version):
        theirs = client.get_model_version(name, current).tags.get("logical_date", "")
        if theirs > mine:
            return False
    client.set_registered_model_alias(name, CHAMPION, version)
    return True


def mark_stale_attempts(client, experiment_id: str, name: str, release_id: str, current_run: str) -> list[str]:
    """Close what killed attempts of the same dataset and date left behind: their runs end FAILED
    with ``gate=stale`` and their never-evaluated versions are tagged ``gate=stale`` (so they cannot
    be served, see :func:`check_gate`). Returns the run ids it closed."""
    from mlflow.entities import RunStatus

    closed = []
    runs = client.search_runs([experiment_id], filter_string=f"tags.release_id = '{release_id}'", max_results=200)
    for r in runs:
        if r.info.run_id == current_run or r.data.tags.get("gate") not in (None, "pending"):
            continue
        client.set_tag(r.info.run_id, "gate", "stale")
        if r.info.status not in (RunStatus.to_string(RunStatus.FAILED), RunStatus.to_string(RunStatus.KILLED)):
            client.set_terminated(r.info.run_id, "FAILED")
        closed.append(r.info.run_id)
    if closed:
        for mv in client.search_model_versions(f"name='{name}'"):
            if mv.run_id in closed and mv.tags.get("gate") in (None, "pending"):
                client.set_model_version_tag(name, mv.version, "gate", "stale")
    return closed


def champion_version(client, name: str) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(name, CHAMPION).version)
    except MlflowException:
        return None


def ui_command(tracking_uri: str, port: int = 5000) -> str:
    """The ``mlflow ui`` command that opens this store (for a server URI: open it in a browser)."""
    import shutil
    import sys

    if tracking_uri.startswith(("http://", "https://")):
        return f"open {redact_uri(tracking_uri)} in a browser (the server is the UI)"
    exe = shutil.which("mlflow")
    if exe is None:
        venv_exe = Path(sys.executable).parent / "mlflow"
        exe = str(venv_exe) if venv_exe.exists() else "mlflow"
    else:
        exe = "mlflow"
    return f"{exe} ui --backend-store-uri {tracking_uri} --host 127.0.0.1 --port {port}"


def run_url(experiment_id: str, run_id: str, base: str = "http://127.0.0.1:5000") -> str:
    """Browser address of a run's artifacts page (the report is under report/report.html)."""
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}/artifacts"
