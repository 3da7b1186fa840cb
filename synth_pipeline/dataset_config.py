"""DatasetConfig: one YAML file per dataset describing a synthetic release end to end.

```yaml
name: nasdaq100                      # dataset name: releases, MLflow experiment, registered model
sources:
  events: ../data/nasdaq100_2019.csv # path, SQLAlchemy URI or {path, table, query, encoding, format}
  entities: null                     # optional entity table joined on the schema's entity key
schema: nasdaq100.schema.yaml        # path to a pinned schema, or the schema mapping inline
model:
  preset: fast                       # fast | default | quality
  overrides: {vae_steps: 600}        # any ModelConfig option
split:
  holdout_fraction: 0.2              # share of entities (or windows of a long series) held out
generate:
  n_sequences: null                  # synthetic sequences; null = as many as the train split has
  max_sequences: null                # upper bound on n_sequences, checked at load time; null = 1,000,000
  shards: null                       # parallel generate shards (Parquet parts); null = one per 100,000 sequences
                                     # (or $SYNTH_PIPELINE_MAX_SEQUENCES)
seed: 0                              # split, model, generation and evaluation seed
gate: {min_sequences: 20}            # GateConfig thresholds inline, or a path to a gate YAML
release:
  root: null                         # null: $SYNTH_PIPELINE_RELEASE_ROOT, else ./releases
mlflow:
  tracking_uri: null                 # null: $MLFLOW_TRACKING_URI, else sqlite:///./mlflow.db
  experiment: null                   # null: the dataset name
  registered_model: null             # null: <name>-synthesizer
airflow:                             # read by the DAG factory only (dags/), not by run_release
  schedule: "@daily"
  queue: null
  pool: null
```

Relative paths (sources, schema, release root, a ``sqlite:///`` tracking URI) are resolved
against the config file's folder; they may use ``${VAR}`` or ``${VAR:-default}``. Every key is checked: an unknown key, a missing source file or
schema file, or an invalid model/gate option fails at load time, naming the key or file, before
anything is read or trained.
"""

from __future__ import annotations

import copy
import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from synth_pipeline.config import ModelConfig, check_seed
from synth_pipeline.errors import ConfigError, IngestError, SchemaError
from synth_pipeline.io_utils import read_yaml
from synth_pipeline.names import check_name  # re-exported: operators.factory imports it from here

if TYPE_CHECKING:  # pandas-heavy modules are imported when a config is really loaded, so DAG files
    # can check a config's structure at parse time cheaply (check_structure)
    from synth_pipeline.ingest import Source
    from synth_pipeline.schema import DatasetSchema

RELEASE_ROOT_ENV = "SYNTH_PIPELINE_RELEASE_ROOT"
TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"

# section -> allowed keys (None: a leaf value, not a section)
_TOP_KEYS: dict[str, set[str] | None] = {
    "name": None,
    "sources": {"events", "entities"},
    "schema": None,
    "model": {"preset", "overrides"},
    "split": {"holdout_fraction"},
    "generate": {"n_sequences", "max_sequences", "shards"},
    "seed": None,
    "gate": None,  # checked by GateConfig.from_dict
    "release": {"root"},
    "mlflow": {"tracking_uri", "experiment", "registered_model"},
    "airflow": {"schedule", "queue", "pool"},
}


@dataclass
class DatasetConfig:
    name: str
    events: Source
    schema: DatasetSchema
    entities: Source | None = None
    model_preset: str = "fast"
    model_overrides: dict[str, Any] = field(default_factory=dict)
    holdout_fraction: float = 0.2
    n_sequences: int | None = None
    max_sequences: int | None = None  # None: streaming.max_sequences() (env or default)
    shards: int | None = None  # generate shards; None: shards.shard_count() derives it from n_sequences
    seed: int = 0
    gate: dict[str, Any] = field(default_factory=dict)
    release_root: Path | str | None = None  # a local folder, or an object-store URI (release_store.py)
    tracking_uri: str | None = None
    experiment: str | None = None
    registered_model: str | None = None
    airflow: dict[str, Any] = field(default_factory=dict)
    config_path: Path | None = None  # where it was loaded from (for messages)
    schema_path: Path | None = None
    check_gate: bool = field(default=True, repr=False, compare=False)  # False: skip the gate-key check
    # (it imports the evaluation package, i.e. torch; DAG files parsing configs can skip it --
    # run_release always checks the gate before reading any data)

    def __post_init__(self) -> None:
        check_name(self.name)
        if not isinstance(self.holdout_fraction, (int, float)) or isinstance(self.holdout_fraction, bool) \
                or not 0.0 < float(self.holdout_fraction) < 1.0:
            raise ConfigError(f"{self._where}split.holdout_fraction must be a number in (0, 1), "
                              f"got {self.holdout_fraction!r}")
        if self.n_sequences is not None and (not isinstance(self.n_sequences, int) or isinstance(self.n_sequences, bool)
                                             or self.n_sequences < 1):
            raise ConfigError(f"{self._where}generate.n_sequences must be a positive integer or null, "
                              f"got {self.n_sequences!r}")
        if self.shards is not None:
            from synth_pipeline.shards import MAX_SHARDS

            if not isinstance(self.shards, int) or isinstance(self.shards, bool) or not 1 <= self.shards <= MAX_SHARDS:
                raise ConfigError(f"{self._where}generate.shards must be an integer in [1, {MAX_SHARDS}] or null, "
                                  f"got {self.shards!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ConfigError(f"{self._where}seed must be an integer, got {self.seed!r}")
        check_seed(self.seed, f"{self._where}seed")
        from synth_pipeline.streaming import check_n_sequences, max_sequences

        try:
            limit = max_sequences(self.max_sequences, "generate.max_sequences")
            if self.n_sequences is not None:
                check_n_sequences(self.n_sequences, limit, "generate.n_sequences")
        except ConfigError as e:
            raise ConfigError(f"{self._where}{e}") from None
        if not isinstance(self.model_overrides, dict):
            raise ConfigError(f"{self._where}model.overrides must be a mapping of option: value")
        if not isinstance(self.gate, dict):
            raise ConfigError(f"{self._where}gate must be a mapping of threshold: value")
        if self.registered_model is not None:
            check_name(self.registered_model, "mlflow.registered_model")
        if self.tracking_uri is not None:
            from synth_pipeline.errors import TrackingError
            from synth_pipeline.tracking_uri import check_scheme

            try:
                check_scheme(self.tracking_uri)
            except TrackingError as e:
                raise ConfigError(f"{self._where}mlflow.tracking_uri: {e}") from None
        try:  # unknown model options fail now, not after ingest
            self.model_config()
        except ConfigError as e:
            raise ConfigError(f"{self._where}model: {e}") from None
        if self.check_gate:
            self._check_gate_keys()

    # -- derived ---------------------------------------------------------------------------------
    @property
    def _where(self) -> str:
        return f"config '{self.config_path}': " if self.config_path else ""

    @property
    def model_name(self) -> str:
        """Registered model name: ``<dataset>-synthesizer`` unless configured."""
        return self.registered_model or f"{self.name}-synthesizer"

    @property
    def experiment_name(self) -> str:
        return self.experiment or self.name

    def model_config(self) -> ModelConfig:
        overrides = {"seed": self.seed, **self.model_overrides}
        return ModelConfig.from_preset(self.model_preset, overrides)

    def _check_gate_keys(self) -> None:
        import dataclasses

        try:
            from synth_pipeline.evaluation.gate import GateConfig
        except ImportError:  # pragma: no cover - evaluation ships with the package
            return
        known = {f.name for f in dataclasses.fields(GateConfig)}
        for key in self.gate:
            if key not in known:
                raise ConfigError(f"{self._where}unknown key 'gate.{key}'; valid keys in 'gate': {sorted(known)}")

    def gate_config(self):
        """The evaluation's GateConfig, values checked (imports the evaluation package)."""
        from synth_pipeline.evaluation.gate import GateConfig

        try:
            return GateConfig.from_dict(copy.deepcopy(self.gate))
        except ConfigError as e:
            raise ConfigError(f"{self._where}gate: {e}") from None

    def resolved_release_root(self, override: str | Path | None = None) -> Path | str:
        """The release root: an absolute local folder, or a checked object-store URI (``s3://...``)."""
        from synth_pipeline import release_store

        root = override or self.release_root or os.environ.get(RELEASE_ROOT_ENV) or "releases"
        if release_store.is_remote(root):
            return release_store.check_uri(str(root))
        return release_store.local_path(root)

    def resolved_tracking_uri(self, override: str | None = None) -> str:
        uri = override or self.tracking_uri or os.environ.get(TRACKING_URI_ENV)
        if not uri:
            uri = f"sqlite:///{(Path.cwd() / 'mlflow.db').resolve()}"
        return uri

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe summary (paths redacted of credentials) for MLflow params/artifacts."""
        from synth_pipeline.ingest import _redact

        def src(s: Source | None) -> Any:
            if s is None:
                return None
            d = {"path": _redact(s.path)}
            for k in ("table", "encoding", "format"):
                v = getattr(s, k)
                if v is not None and not (k == "encoding" and v == "utf-8"):
                    d[k] = v
            if s.query is not None:  # a query may hold literals (names, ids): lineage keeps its digest only
                d["query_sha256"] = hashlib.sha256(s.query.encode("utf-8")).hexdigest()
            return d

        return {
            "name": self.name,
            "sources": {"events": src(self.events), "entities": src(self.entities)},
            "schema": str(self.schema_path) if self.schema_path else "<inline>",
            "model": {"preset": self.model_preset, "overrides": dict(self.model_overrides)},
            "split": {"holdout_fraction": self.holdout_fraction},
            "generate": {"n_sequences": self.n_sequences,
                         **({"max_sequences": self.max_sequences} if self.max_sequences is not None else {}),
                         **({"shards": self.shards} if self.shards is not None else {})},
            "seed": self.seed,
            "gate": copy.deepcopy(self.gate),
            "release": {"root": str(self.release_root) if self.release_root else None},
            "mlflow": {"tracking_uri": _redact(self.tracking_uri) if self.tracking_uri else None,
                       "experiment": self.experiment, "registered_model": self.registered_model},
            "airflow": dict(self.airflow),
        }

    # -- loading ---------------------------------------------------------------------------------
    @classmethod
    def from_yaml(cls, path: str | Path, check_gate: bool = True) -> DatasetConfig:
        p = Path(path).expanduser()
        data = read_yaml(p, "config file", ConfigError)
        return cls.from_dict(data, base_dir=p.resolve().parent, config_path=p, check_gate=check_gate)

    @classmethod
    def from_dict(cls, data: Any, base_dir: str | Path | None = None, config_path: Path | None = None,
                  check_gate: bool = True) -> DatasetConfig:
        from synth_pipeline.schema import DatasetSchema

        where = f"config '{config_path}': " if config_path else "config: "
        base = Path(base_dir).resolve() if base_dir is not None else Path.cwd()
        check_structure(data, where)
        data = copy.deepcopy(data)
        sources = data["sources"]
        if sources.get("events") is None:
            raise ConfigError(f"{where}missing required key 'sources.events' (the event table)")
        events = _source(sources["events"], base, where, "sources.events")
        entities = _source(sources["entities"], base, where, "sources.entities") if sources.get("entities") else None

        schema_obj = data["schema"]
        schema_path = None
        if isinstance(schema_obj, dict):
            try:
                schema = DatasetSchema.from_dict(schema_obj)
            except SchemaError as e:
                raise ConfigError(f"{where}schema: {e}") from None
        elif isinstance(schema_obj, str):
            schema_path = _resolve(schema_obj, base)
            if not schema_path.is_file():
                raise ConfigError(f"{where}schema file '{schema_path}' (key 'schema') does not exist")
            try:
                schema = DatasetSchema.from_yaml(schema_path)
            except SchemaError as e:
                raise ConfigError(f"{where}schema file '{schema_path}': {e}") from None
        else:
            raise ConfigError(f"{where}'schema' must be a path to a schema YAML or an inline mapping")

        gate = data.get("gate") or {}
        if isinstance(gate, str):  # a gate YAML file (e.g. gate.default.yaml) instead of inline thresholds
            gate_path = _resolve(gate, base)
            try:
                gate = yaml.safe_load(gate_path.read_text(encoding="utf-8")) or {}
            except FileNotFoundError:
                raise ConfigError(f"{where}gate file '{gate_path}' (key 'gate') does not exist") from None
            except (OSError, yaml.YAMLError) as e:
                raise ConfigError(f"{where}gate file '{gate_path}' cannot be read: {type(e).__name__}") from None
            if isinstance(gate, dict) and set(gate) == {"gate"}:
                gate = gate["gate"]
        name = data.get("name") or schema.name
        model = data.get("model") or {}
        release = data.get("release") or {}
        mlf = data.get("mlflow") or {}
        root = release.get("root")
        uri = mlf.get("tracking_uri")
        try:
            return cls(
                name=name,
                events=events,
                entities=entities,
                schema=schema,
                model_preset=model.get("preset", "fast"),
                model_overrides=model.get("overrides") or {},
                holdout_fraction=(data.get("split") or {}).get("holdout_fraction", 0.2),
                n_sequences=(data.get("generate") or {}).get("n_sequences"),
                max_sequences=(data.get("generate") or {}).get("max_sequences"),
                shards=(data.get("generate") or {}).get("shards"),
                seed=data.get("seed", 0) if data.get("seed") is not None else 0,
                gate=gate,
                release_root=_resolve_release_root(str(root), base) if root else None,
                tracking_uri=_resolve_uri(str(uri), base) if uri else None,
                experiment=mlf.get("experiment"),
                registered_model=mlf.get("registered_model"),
                airflow=data.get("airflow") or {},
                config_path=config_path,
                schema_path=schema_path,
                check_gate=check_gate,
            )
        except ConfigError as e:
            msg = str(e)
            raise ConfigError(msg if msg.startswith("config") else f"{where}{msg}") from None


def check_structure(data: Any, where: str = "config: ") -> None:
    """The checks that need no file and no heavy import: a mapping, known keys in every section,
    the required keys, a valid dataset name, known model options. DAG files run this at parse time
    (a source file may not exist until an upstream task writes it); loading runs it first too."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}must be a mapping with at least 'sources' and 'schema'")
    for key in data:
        if key not in _TOP_KEYS:
            raise ConfigError(f"{where}unknown key '{key}'; valid keys: {', '.join(_TOP_KEYS)}")
    for key, allowed in _TOP_KEYS.items():
        if allowed is None or data.get(key) is None:
            continue
        section = data[key]
        if not isinstance(section, dict):
            raise ConfigError(f"{where}'{key}' must be a mapping with keys {sorted(allowed)}")
        for sub in section:
            if sub not in allowed:
                raise ConfigError(f"{where}unknown key '{key}.{sub}'; valid keys in '{key}': {sorted(allowed)}")
    for required in ("sources", "schema"):
        if data.get(required) is None:
            raise ConfigError(f"{where}missing required key '{required}'")
    if data["sources"].get("events") is None:
        raise ConfigError(f"{where}missing required key 'sources.events' (the event table)")
    if data.get("name") is not None:
        try:
            check_name(data["name"])
        except ConfigError as e:
            raise ConfigError(f"{where}{e}") from None
    model = data.get("model") or {}
    if not isinstance(model.get("overrides") or {}, dict):
        raise ConfigError(f"{where}model.overrides must be a mapping of option: value (e.g. "
                          f"{{vae_steps: 600}}), got {type(model['overrides']).__name__} {model['overrides']!r}")
    if not isinstance(model.get("preset", "fast"), str):
        raise ConfigError(f"{where}model.preset must be one of fast, default, quality; got {model['preset']!r}")
    try:
        ModelConfig.from_preset(model.get("preset", "fast"), model.get("overrides") or {})
    except ConfigError as e:
        raise ConfigError(f"{where}model: {e}") from None


_ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_env(value: str) -> str:
    """``${VAR}`` / ``${VAR:-default}`` in paths and URIs, so one config serves several machines
    (an unset variable without a default is a ConfigError naming it)."""

    def sub(m: re.Match) -> str:
        v = os.environ.get(m.group(1))
        if v is None or (v == "" and m.group(2) is not None):
            if m.group(2) is None:
                raise ConfigError(f"environment variable '{m.group(1)}' used in '{value}' is not set "
                                  f"(set it, or write ${{{m.group(1)}:-default}})")
            return m.group(2)
        return v

    return _ENV_RE.sub(sub, value)


def _resolve(path: str, base: Path) -> Path:
    p = Path(expand_env(path)).expanduser()
    return p if p.is_absolute() else (base / p).resolve()


def _resolve_release_root(root: str, base: Path) -> Path | str:
    """A relative path (or ``file:`` URI) is taken relative to the config file; an object-store URI
    (``s3://bucket/prefix``) is checked for its form (credentials in it are refused) and kept."""
    from synth_pipeline import release_store

    root = expand_env(root)
    if release_store.is_remote(root):
        return release_store.check_uri(root)
    if release_store.scheme_of(root) == "file":
        return release_store.local_path(root)
    return _resolve(root, base)


def _resolve_uri(uri: str, base: Path) -> str:
    """Relative ``sqlite:///x.db`` / ``file:x`` / plain paths are taken relative to the config file."""
    uri = expand_env(uri)
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return f"sqlite:///{_resolve(uri[len('sqlite:///'):], base)}"
    if "://" not in uri and not uri.startswith("file:"):
        return str(_resolve(uri, base))
    return uri


def _source(obj: Any, base: Path, where: str, key: str) -> Source:
    from synth_pipeline.ingest import Source

    try:
        src = Source.parse(obj)
    except IngestError as e:
        raise ConfigError(f"{where}{key}: {e}") from None
    if src.kind == "sql" and src.query is not None:  # one read-only SELECT, checked before anything runs
        from synth_pipeline.sql_source import check_select

        try:
            check_select(src.query)
        except IngestError as e:
            raise ConfigError(f"{where}{key}.query: {e}") from None
    if src.kind != "sql":
        raw = src.path.removeprefix("file://")
        path = _resolve(raw, base)
        if not path.is_file():
            raise ConfigError(f"{where}{key}: source file '{path}' does not exist")
        src = Source(path=str(path), table=src.table, query=src.query, encoding=src.encoding, format=src.format)
    return src


def load_config(config: str | Path | dict | DatasetConfig) -> DatasetConfig:
    """A DatasetConfig from a path, a mapping (paths relative to the cwd) or a DatasetConfig."""
    if isinstance(config, DatasetConfig):
        return config
    if isinstance(config, dict):
        return DatasetConfig.from_dict(config)
    return DatasetConfig.from_yaml(config)


def shipped_config(name: str) -> Path:
    """Path of a config shipped in ``synth_pipeline/configs`` (e.g. ``nasdaq100``)."""
    from importlib import resources

    fname = name if name.endswith((".yaml", ".yml")) else f"{name}.yaml"
    p = Path(str(resources.files("synth_pipeline") / "configs" / fname))
    if not p.is_file():
        shipped = sorted(q.stem for q in p.parent.glob("*.yaml")
                         if not q.name.endswith(".schema.yaml") and not q.stem.startswith("gate"))
        raise ConfigError(f"no shipped config '{name}'; shipped: {', '.join(shipped)}")
    return p
