"""Synthesizer: the user-facing object (schema + encoder + model).

``fit(df)`` types the table with the schema, fits the encoder on it and trains TimeAutoDiff;
``sample(n)`` returns a synthetic table with the source's columns and dtypes, fresh surrogate
keys, real time spacing, and lengths/start times drawn from the encoder's protected layout model
(k-anonymous bins on the real time grid; never a stored list of real starts).
``sample(conditions=...)`` fixes known cells (static attributes, a prefix, any cells).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from synth_pipeline import __version__
from synth_pipeline.config import ModelConfig
from synth_pipeline.dp import PrivacyConfig, mechanism_entropy, statistics_budget
from synth_pipeline.encoding import TableEncoder, privacy_units, sequence_index
from synth_pipeline.errors import ConditioningError, ModelFileError
from synth_pipeline.ingest import coerce, parse_times
from synth_pipeline.io_utils import atomic_write_json
from synth_pipeline.model_files import check_model_dir, load_errors, write_marker
from synth_pipeline.models.timeautodiff import Conditions, TimeAutoDiff
from synth_pipeline.schema import DatasetSchema
from synth_pipeline.transformers import calendar

if TYPE_CHECKING:  # the evaluation package is heavy to import; the diagnostic imports it when called
    from synth_pipeline.evaluation.dependency import DependencyResult



class Synthesizer:
    def __init__(self, schema: DatasetSchema, config: ModelConfig | None = None):
        self.schema = schema
        self.config = config or ModelConfig.from_preset("fast")
        self.encoder: TableEncoder | None = None
        self.model: TimeAutoDiff | None = None
        self._schema_fingerprint: str | None = None  # of the training schema, kept by save/load
        self.fit_seconds = 0.0

    # ------------------------------------------------------------------------------------------
    def fit(self, df: pd.DataFrame, schema: DatasetSchema | None = None) -> Synthesizer:
        """Train on ``df`` (the train split only: the holdout must never reach this)."""
        t0 = time.perf_counter()
        if schema is not None:
            self.schema = schema
        self._schema_fingerprint = None
        df = coerce(df, self.schema)
        cfg = self.config
        privacy = PrivacyConfig.from_dict(cfg.privacy)
        # dp.py; the statistics' noise seed is secret (OS entropy, stored nowhere): a DP fit is not reproducible
        stats = None
        if privacy is not None:
            stats = statistics_budget(privacy, int(mechanism_entropy().generate_state(1, np.uint64)[0] >> 1))
        self.encoder = TableEncoder(
            self.schema, protection=cfg.protection(), n_quantiles=cfg.n_quantiles,
            max_categories=cfg.max_categories, static_bins=cfg.static_bins,
            min_bin_sequences=cfg.min_bin_sequences, levels=cfg.entity_levels, dp=stats,
        ).fit(df)
        data = self.encoder.transform(df)
        units = None
        if privacy is not None:  # DP-SGD samples entities: the privacy unit of each sequence
            idx = sequence_index(df, self.schema)[0]
            units = privacy_units(df, self.schema)[idx[:, 0]]
        self.model = TimeAutoDiff(cfg, self.encoder.dims).fit(data, units=units, stats=stats)
        self.fit_seconds = time.perf_counter() - t0
        return self

    @property
    def schema_fingerprint(self) -> str:
        """Fingerprint of the schema the model was trained with. A loaded model carries the
        protected copy of that schema (no rare level, no pinned range), so the fingerprint is kept."""
        return self._schema_fingerprint or self.schema.fingerprint()

    def _require_fitted(self) -> tuple[TableEncoder, TimeAutoDiff]:
        if self.encoder is None or self.model is None:
            raise ModelFileError("the synthesizer is not trained: call fit() or Synthesizer.load()")
        return self.encoder, self.model

    # ------------------------------------------------------------------------------------------
    def sample(
        self,
        n_entities: int | None = None,
        conditions: pd.DataFrame | None = None,
        mask: pd.DataFrame | None = None,
        seed: int | None = None,
    ) -> pd.DataFrame:
        """Generate a synthetic table.

        - ``sample(n)``: unconditional, ``n`` sequences.
        - ``conditions`` without the time column: one row of static attributes per entity.
        - ``conditions`` with the time column (and entity/sequence key): rows to generate; non-missing
          cells are fixed (imputation, forecasting from a known prefix, time-varying metadata).
          ``mask`` (same shape, True = known) overrides "non-missing means known".
        """
        enc, model = self._require_fitted()
        seed = self.config.seed if seed is None else seed
        rng = np.random.default_rng(seed)
        s = self.schema
        if conditions is None:
            if n_entities is None or n_entities < 1:
                raise ConditioningError("pass n_entities >= 1 (or conditions)")
            lengths, starts = self._draw_layout(n_entities, rng)
            cond = self._layout_conditions(lengths, starts)
            known_frame = None
        elif s.time_index in conditions.columns:
            cond, lengths, starts, known_frame = self._cell_conditions(conditions, mask)
        else:
            lengths, starts = self._draw_layout(len(conditions), rng)
            if n_entities is not None and n_entities != len(conditions):
                raise ConditioningError(f"n_entities={n_entities} but conditions has {len(conditions)} rows; give one")
            cond = self._layout_conditions(lengths, starts)
            cond.static, cond.static_known = self._static_conditions(conditions, mask)
            known_frame = None
        out = model.sample(len(lengths), cond, seed=seed)
        table = enc.inverse_transform(out["num"], out["num_miss"], out["cat"], out["static"], lengths, starts, rng)
        if known_frame is not None:
            table = _fix_known_cells(table, *known_frame)
        return table

    def dependency(self, n: int = 32, seed: int | None = None, n_points: int = 32,
                   max_steps: int | None = 128, progress: Callable[[str], None] | None = None) -> DependencyResult:
        """PSLD dependency measures of the trained decoder on ``n`` generated sequences: how much each
        output step is driven by the latent steps versus the calendar context (evaluation/dependency.py).
        ``result.metrics()`` goes to MLflow, ``result.heatmap_png()`` into the audit report. Long
        sequences: only the first ``max_steps`` output steps are analysed (every latent step is a column).
        ``progress``: optional callable taking a line of text at each quarter of the computation."""
        from synth_pipeline.evaluation.dependency import decoder_outputs, dependency_measures

        enc, model = self._require_fitted()
        if n < 1:
            raise ConditioningError(f"dependency(n={n}): pass n >= 1 generated sequences")
        seed = self.config.seed if seed is None else seed
        lengths, starts = self._draw_layout(n, np.random.default_rng(seed))
        lat = model.sample_latents(n, self._layout_conditions(lengths, starts), seed=seed)
        static = lat["static"].clone()
        result = dependency_measures(decoder_outputs(model.vae, static), lat["z"].clone(), lat["calendar"].clone(),
                                     lat["present"].clone(), n_points=n_points, max_steps=max_steps,
                                     progress=progress)
        cfg = self.config
        result.notes = {"objective": cfg.objective, "refine": model.refine, "long": cfg.long,
                        "decoder": "VAE decoder (the L2D refiner, when on, is not part of it)"}
        return result

    def _draw_layout(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        return self.encoder.layout.draw(n, rng)

    def _layout_conditions(self, lengths: np.ndarray, starts: np.ndarray) -> Conditions:
        enc = self.encoder
        T = enc.max_len
        grid = enc.layout.grid(starts, T)
        present = (np.arange(T)[None, :] < lengths[:, None]).astype(np.float32)
        return Conditions(calendar=torch.from_numpy(calendar(grid)), present=torch.from_numpy(present))

    def _static_conditions(self, frame: pd.DataFrame, mask: pd.DataFrame | None) -> tuple[torch.Tensor, torch.Tensor]:
        enc = self.encoder
        valid = {c.name for c in enc.static_codecs}
        bad = sorted(set(frame.columns) - valid)
        if bad:
            raise ConditioningError(
                f"condition column(s) {bad} are not static attributes; static columns: {sorted(valid)} "
                f"(to fix time-varying cells, include the time column '{self.schema.time_index}')"
            )
        if mask is not None:
            frame = frame.where(mask.reindex_like(frame).fillna(False).astype(bool))
        static, known = enc.encode_static_conditions(frame)
        return torch.from_numpy(static), torch.from_numpy(known)

    def _cell_conditions(self, conditions: pd.DataFrame, mask: pd.DataFrame | None):
        enc, s = self.encoder, self.schema
        key = s.entity_key or "sequence_id"
        frame = conditions.copy()
        if key not in frame.columns:
            frame[key] = 0  # one sequence
        unknown_cols = sorted(set(frame.columns) - {c.name for c in enc.codecs} - {key, s.time_index})
        if unknown_cols:
            raise ConditioningError(
                f"condition column(s) {unknown_cols} are not modelled columns; valid: {[c.name for c in enc.codecs]}"
            )
        if mask is not None:
            m = mask.reindex_like(conditions).fillna(False).astype(bool)
            for col in m.columns:
                if col not in (key, s.time_index):
                    frame[col] = frame[col].where(m[col])
        frame[s.time_index] = parse_times(frame[s.time_index], s, s.time_index, "conditions")
        frame = frame.sort_values([key, s.time_index], kind="stable").reset_index(drop=True)
        cond_schema = DatasetSchema.from_dict({**s.to_dict(), "entity_key": None, "sequence_length": None})
        cond_schema.entity_key = key
        codes = pd.factorize(frame[key], sort=False)[0]
        frame["__seq__"] = codes
        idx, lengths, _ = _seq_index_by(frame, "__seq__")
        if idx.shape[1] > enc.max_len:
            raise ConditioningError(
                f"a conditioned sequence has {idx.shape[1]} rows; the model generates at most {enc.max_len}"
            )
        T = enc.max_len
        idx = np.pad(idx, ((0, 0), (0, T - idx.shape[1])), constant_values=-1)
        times = enc.layout.to_ns(frame[s.time_index])
        starts = times[idx[:, 0]]
        cond = self._layout_conditions(lengths, starts)
        cells = enc.encode_cells(frame, idx)
        cond.num, cond.num_known = torch.from_numpy(cells["num"]), torch.from_numpy(cells["num_known"])
        cond.cat, cond.cat_known = torch.from_numpy(cells["cat"]), torch.from_numpy(cells["cat_known"])
        static_cols = [c.name for c in enc.static_codecs if c.name in frame.columns]
        first = frame.iloc[idx[:, 0]][static_cols].reset_index(drop=True)
        static, known = self._static_conditions(first, None)
        n_static = len(enc.static_codecs)
        static[:, n_static:] = torch.from_numpy(cells["level_tokens"])
        known[:, n_static:] = torch.from_numpy(cells["level_known"])
        cond.static, cond.static_known = static, known
        known_cols = [c for c in frame.columns if c in {cc.name for cc in enc.codecs}]
        return cond, lengths, starts, (frame[known_cols].reset_index(drop=True), known_cols)

    # ------------------------------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        """Write encoder JSON + model config JSON + weights into ``directory`` (atomically replaced)."""
        enc, model = self._require_fitted()
        directory = Path(directory)
        tmp = directory.parent / f".{directory.name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            enc.save(tmp / "encoder.json")
            model.save(tmp)
            atomic_write_json(tmp / "synthesizer.json", {
                "package_version": __version__,
                "schema_fingerprint": self.schema_fingerprint,
                "fit_seconds": self.fit_seconds,
            })
            enc.public_schema().to_yaml(tmp / "schema.yaml")  # protected: no rare level, no pinned range
            write_marker(tmp)  # `train --out` replaces only folders carrying this marker (model_files.py)
            if directory.exists():
                old = directory.parent / f".{directory.name}.old-{os.getpid()}"
                os.replace(directory, old)
                os.replace(tmp, directory)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, directory)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return directory

    @classmethod
    def load(cls, directory: str | Path, device: str = "auto") -> Synthesizer:
        directory = check_model_dir(directory)  # ModelFileError naming the broken file (model_files.py)
        with load_errors(directory, "encoder.json / synthesizer.json / weights.pt"):
            enc = TableEncoder.load(directory / "encoder.json")
            model = TimeAutoDiff.load(directory, device=device)
            meta: dict[str, Any] = json.loads((directory / "synthesizer.json").read_text(encoding="utf-8"))
            syn = cls(enc.schema, model.config)
            syn.encoder, syn.model = enc, model
            syn.fit_seconds = float(meta["fit_seconds"])
            syn._schema_fingerprint = meta.get("schema_fingerprint")
        return syn


def _seq_index_by(frame: pd.DataFrame, col: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    s = DatasetSchema(columns=[{"name": col, "kind": "identifier"}, {"name": "__t__", "kind": "datetime"}],
                      time_index="__t__", entity_key=col)
    return sequence_index(frame[[col]].assign(__t__=0), s)


def _fix_known_cells(table: pd.DataFrame, known: pd.DataFrame, cols: list[str]) -> pd.DataFrame:
    """Overwrite generated cells with the given values wherever a value was given (exactly)."""
    for c in cols:
        given = known[c].notna().to_numpy()
        if given.any():
            vals = table[c].to_numpy(dtype=object, copy=True) if table[c].dtype == object else table[c].to_numpy(copy=True)
            src = known[c].to_numpy()
            try:
                vals[given] = src[given]
                table[c] = pd.Series(vals, dtype=table[c].dtype)
            except (TypeError, ValueError):
                table[c] = table[c].astype(object).where(~given, known[c].astype(object))
    return table
