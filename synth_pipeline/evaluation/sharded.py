"""The audit in three steps, so the synthetic side can be split over shards (issue 18 item 2):

1. :func:`prepare_audit` (once): checks and types train and holdout, fits the representation on
   train, draws the equal-size train-sample and holdout references, and keeps what every shard
   needs: the encoded references, train's sequence and row hashes (exact copies, row matches), the
   holdout's row-match rate. :func:`save_prep` / :func:`load_prep` move it through staging.
2. :func:`audit_shard` (once per synthetic shard, e.g. one Airflow mapped task per generated part):
   encodes that shard only and computes, per synthetic sequence, its 2 nearest train-sample and
   holdout references on the whole entity and its nearest ones on every part (``privacy/parts.py``);
   per real reference, its distance to the nearest synthetic sequence of the shard (membership);
   exact-copy and row-match hit counts; and a seeded candidate sample for the fidelity metrics.
   :func:`save_shard` writes it as one ``.npz`` atomically. Memory: the shard's own sequences plus
   the reference vectors, whatever the number of shards.
3. :func:`merge_audit` (once): concatenates the per-sequence neighbours in shard order and computes
   the DCR share, its bootstrap interval, the parts and the membership attack (each real
   reference's nearest synthetic distance: the minimum over shards) with the same functions as one
   search over everything; fidelity metrics on a seeded sample of at most ``max_sequences``
   synthetic sequences; the gate; the result (report written by the caller or ``out_dir``). The
   merge holds about 30 numbers per synthetic sequence (neighbours on the entity and each part)
   and one shard's fidelity candidates at a time, never a synthetic table.

``evaluation.evaluate`` is prepare + one shard + merge in one process, so there is one code path;
sharded and unsharded audits give the same DCR share, interval, parts, membership AUC, exact copies
and row matches (``tests/test_sharded_audit.py``). Shards must be given in the order of the
synthetic sequences (generate's parts in shard order are: their keys increase with the shard).
"Same" assumes exact searches, which is what audits of ordinary size run; above
``distances.EXACT_WORK`` a search may take the PCA-projected path, whose projection is fitted on a
sample of that call's queries: it is exact wherever it certifies or recomputes every query
(``search`` info in metrics.json, summed over shards), otherwise approximate per shard. A reference's
nearest synthetic distance is the minimum of its per-shard nearest distances, each recomputed in
float64: it can only differ from one search's when two synthetic sequences tie within float32
rounding.

The fidelity sample is a bottom-k sample on a seeded hash of each sequence's content, ties broken by
position: it does not depend on the number of shards, and it is every sequence, in order, when there
are at most ``max_sequences`` of them (then the metrics see exactly the unsharded input).
``audit_max_synthetic`` (a seeded subset of the synthetic sequences for the distance audit) needs
each shard's position in the whole table: ``start`` / ``total`` (a shard of generate's plan has them).
"""

from __future__ import annotations

import json
import pickle
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from synth_pipeline.evaluation.fidelity import MetricContext, MetricResult, default_metrics
from synth_pipeline.evaluation.fidelity._gru import TrainSettings
from synth_pipeline.evaluation.fidelity.base import Metric, sample_index
from synth_pipeline.evaluation.gate import GateConfig, decide
from synth_pipeline.evaluation.inputs import (
    ROLES,
    EvaluationInputError,
    prepare_real,
    prepare_synthetic,
    train_families,
)
from synth_pipeline.evaluation.outputs import write_outputs
from synth_pipeline.evaluation.privacy.dcr import dcr_from_neighbours, dcr_neighbours
from synth_pipeline.evaluation.privacy.membership import attack_from_distances, nearest_synthetic
from synth_pipeline.evaluation.privacy.parts import part_neighbours, parts_from_neighbours
from synth_pipeline.evaluation.representation import EncodedSet, Representation, protected_ranges
from synth_pipeline.evaluation.result import EvaluationResult
from synth_pipeline.schema import DatasetSchema
from synth_pipeline.transformers.protection import RARE_TOKEN, Protection

PREP_FILE = "prepared.pkl"
SHARD_FILE = "audit-{:05d}.npz"
_SET_FIELDS = [f.name for f in fields(EncodedSet) if f.name != "name"]
_M64 = (1 << 64) - 1


def gate_config(gate: GateConfig | dict | str | Path | None) -> GateConfig:
    if gate is None:
        return GateConfig()
    if isinstance(gate, GateConfig):
        return gate
    if isinstance(gate, dict):
        return GateConfig.from_dict(gate)
    return GateConfig.from_yaml(gate)


@dataclass
class AuditPrep:
    """What every shard and the merge need; real data only as encoded references and hashes (it
    lives in the release's private staging folder, like the staged tables)."""

    schema: DatasetSchema
    cfg: GateConfig
    seed: int
    rare_tokens: tuple[str, ...]
    rep: Representation
    families: dict[str, str]
    train_ref: EncodedSet
    holdout_ref: EncodedSet
    train_seq_hash: np.ndarray  # every train sequence (exact copies)
    train_rows: np.ndarray  # unique row hashes of train (row matches)
    holdout_rows: dict[str, Any]  # {"rate", "n"}: the holdout's own row-match rate against train
    inputs: dict[str, dict[str, int]]  # train / holdout rows and sequences
    balance: dict[str, Any]
    representation: dict[str, Any]
    ranges: dict[str, tuple[float, float]]
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def refs_full_length(self) -> bool:
        return self.train_ref.full_length and self.holdout_ref.full_length

    @property
    def parts_on(self) -> bool:
        return self.cfg.dcr_parts_share_max is not None or self.cfg.report_all_privacy

    @property
    def membership_on(self) -> bool:
        return self.cfg.membership_auc_max is not None or self.cfg.report_all_privacy


def prepare_audit(
    train_df: pd.DataFrame,
    holdout_df: pd.DataFrame,
    schema: DatasetSchema | str | Path,
    gate: GateConfig | dict | str | Path | None = None,
    seed: int = 0,
    *,
    rare_tokens: tuple[str, ...] = (RARE_TOKEN,),
    protection: Protection | None = None,
    progress: Callable[[str], None] | None = None,
    synthetic_df: pd.DataFrame | None = None,
) -> AuditPrep:
    """Step 1: fit the representation on train and draw the references (``synthetic_df``, when the
    whole table is at hand, only has its columns checked first, as the unsharded audit did)."""
    if not isinstance(schema, DatasetSchema):
        schema = DatasetSchema.from_yaml(schema)
    cfg = gate_config(gate)
    t = time.perf_counter()
    real = prepare_real(train_df, holdout_df, schema, cfg.max_size_ratio, synthetic=synthetic_df)
    rep = Representation(schema).fit(real.frames["train"], real.layouts["train"])
    train = rep.transform(real.frames["train"], "train", real.layouts["train"])
    holdout = rep.transform(real.frames["holdout"], "holdout", real.layouts["holdout"])
    encode_s = time.perf_counter() - t
    if progress:
        progress(f"encoded {len(train)} train and {len(holdout)} holdout sequences "
                 f"({rep.T} steps, {train.dyn.shape[2]} step + {train.static.shape[1]} static features)")
    rng = np.random.default_rng([seed, 3])
    n_ref = min(len(train), len(holdout))
    train_ref = train.subset(sample_index(len(train), n_ref, rng), "train sample")
    holdout_ref = holdout.subset(sample_index(len(holdout), n_ref, rng), "holdout")
    balance = {
        "reference_size": n_ref,
        "train_subsampled": len(train) > n_ref,
        "holdout_subsampled": len(holdout) > n_ref,
        "rule": "DCR and fidelity use a random train sample of the holdout's size (or the holdout subsampled "
                "to train's size when train is smaller); exact-copy and row-match checks use all of train",
    }
    train_rows = np.unique(train.row_hash[train.present])
    h = holdout.row_hash[holdout.present]
    ho_rate = float(np.isin(h, train_rows).mean()) if h.size else 0.0
    return AuditPrep(
        schema=schema, cfg=cfg, seed=int(seed), rare_tokens=tuple(rare_tokens), rep=rep,
        families=train_families(real.frames["train"], schema), train_ref=train_ref, holdout_ref=holdout_ref,
        train_seq_hash=train.seq_hash, train_rows=train_rows, holdout_rows={"rate": ho_rate, "n": int(h.size)},
        inputs={r: {"rows": int(len(real.frames[r])), "sequences": real.n_sequences[r]} for r in ("train", "holdout")},
        balance=balance,
        representation={"sequence_length": rep.T, "step_features": int(train.dyn.shape[2]),
                        "static_features": int(train.static.shape[1])},
        ranges=protected_ranges(real.frames["train"], schema, protection or Protection()),
        timings={"encode": encode_s},
    )


def _sample_keys(seq_hash: np.ndarray, seed: int) -> np.ndarray:
    """A seeded pseudo-random uint64 per sequence from its content hash (splitmix64 finaliser)."""
    salt = np.uint64((int(seed) * 0x9E3779B97F4A7C15 + 0x5A17) & _M64)
    with np.errstate(over="ignore"):
        z = (np.asarray(seq_hash, np.uint64) ^ salt) + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def audit_shard(
    prep: AuditPrep,
    synthetic_df: pd.DataFrame,
    *,
    index: int = 0,
    start: int | None = None,
    total: int | None = None,
    count: int | None = None,
    whole: bool | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, np.ndarray]:
    """Step 2: audit one shard of the synthetic table (``whole``: it is the whole table; default:
    when ``total`` is not given).

    ``start`` / ``total``: position of the shard's first sequence and the number of synthetic
    sequences overall (only ``audit_max_synthetic`` needs them); ``count``: the sequences the shard
    should hold (checked then). Returns arrays for :func:`save_shard` / :func:`merge_audit`."""
    t0 = time.perf_counter()
    cfg, rep, schema = prep.cfg, prep.rep, prep.schema
    whole = total is None if whole is None else bool(whole)
    frame, layout, _ = prepare_synthetic(synthetic_df, schema, prep.families, prep.rare_tokens, whole=whole)
    syn = rep.transform(frame, "synthetic", layout)
    n = len(syn)
    encode_s = time.perf_counter() - t0
    start = 0 if start is None else int(start)
    total = n if total is None else int(total)
    cap = cfg.audit_max_synthetic
    sel = None
    if cap is not None and total > cap:
        if (count is not None and n != count) or start + n > total:
            raise EvaluationInputError(
                f"synthetic shard {index}: {n} sequences where the plan has {count} (positions {start}.. of "
                f"{total}); gate.audit_max_synthetic draws its subset by position over all shards, which needs one "
                f"audited sequence per generated one: set audit_max_synthetic to null")
        glob = sample_index(total, cap, np.random.default_rng([prep.seed, 5]))
        sel = glob[(glob >= start) & (glob < start + n)] - start
    syn_dcr = syn if sel is None else syn.subset(sel)
    compact = syn.full_length and prep.refs_full_length
    if progress:
        progress(f"shard {index}: encoded {n} synthetic sequences; memorization audit of {len(syn_dcr)} against "
                 f"{len(prep.train_ref)} train-sample and {len(prep.holdout_ref)} holdout sequences")
    t = time.perf_counter()
    q = syn_dcr.flat(compact)
    tr, ho = prep.train_ref.flat(compact), prep.holdout_ref.flat(compact)
    d_tr, i_tr, d_ho, i_ho, infos = dcr_neighbours(q, tr, ho, progress)
    out: dict[str, np.ndarray] = {
        "d_train": d_tr, "i_train": i_tr, "d_holdout": d_ho, "i_holdout": i_ho,
        "dcr_local": np.arange(n, dtype=np.int64) if sel is None else sel.astype(np.int64),
        "dcr_units": syn_dcr.units,
    }
    parts: list[str] = []
    if prep.parts_on:
        for j, (name, arrays) in enumerate(part_neighbours(rep, syn_dcr, prep.train_ref, prep.holdout_ref,
                                                           prep.seed, progress).items()):
            parts.append(name)
            for key, a in zip(("d_train", "i_train", "d_holdout", "i_holdout"), arrays, strict=True):
                out[f"part{j}_{key}"] = a
    if prep.membership_on:
        out["mem_train"], out["mem_holdout"] = nearest_synthetic(q, tr, ho)
    exact_hits = int(np.isin(syn.seq_hash, prep.train_seq_hash).sum())
    h = syn.row_hash[syn.present]
    row_hits = int(np.isin(h, prep.train_rows).sum()) if h.size else 0
    # fidelity candidates: the shard's bottom-k by seeded content key (the merge keeps the global bottom-k)
    keys = _sample_keys(syn.seq_hash, prep.seed)
    k = min(n, int(cfg.max_sequences))
    cand = np.sort(np.lexsort((np.arange(n), keys))[:k])
    cand_set = syn.subset(cand)
    out["sample_key"], out["sample_local"] = keys[cand], cand.astype(np.int64)
    for f in _SET_FIELDS:
        out[f"sample_{f}"] = getattr(cand_set, f)
    meta = {
        "index": int(index), "n_sequences": n, "n_rows": int(len(frame)), "start": start, "total": total,
        "units_span": int(syn.units.max()) + 1 if n else 0, "search": infos, "parts": parts,
        "membership": prep.membership_on, "exact_hits": exact_hits, "row_hits": row_hits, "row_n": int(h.size),
        "compact": bool(compact), "cap": sel is not None,
        "timings": {"encode": encode_s, "privacy": time.perf_counter() - t},
    }
    out["meta"] = np.array(json.dumps(meta))
    return out


def _meta(shard: Mapping[str, Any]) -> dict[str, Any]:
    return json.loads(str(shard["meta"][()]) if isinstance(shard["meta"], np.ndarray) else str(shard["meta"]))


def _merge_search(infos: list[dict]) -> dict:
    """One search summary per reference set: a single shard's own, else counts summed over shards."""
    if len(infos) == 1:
        return infos[0]
    out = {}
    for label in infos[0]:
        parts = [i[label] for i in infos]
        merged = dict(parts[0])
        merged["mode"] = "exact" if all(p["mode"] == "exact" for p in parts) else "projected"
        for key in ("queries", "certified", "recomputed", "check_queries"):
            vals = [p.get(key) for p in parts]
            merged[key] = None if all(v is None for v in vals) else int(sum(v or 0 for v in vals))
        merged["shards"] = len(parts)
        out[label] = merged
    return out


def merge_audit(
    prep: AuditPrep,
    shards: Sequence[Mapping[str, Any]],
    *,
    metrics: list[Metric] | None = None,
    progress: Callable[[str], None] | None = None,
    out_dir: str | Path | None = None,
) -> Any:
    """Step 3: the audit's result from every shard (in the order of the synthetic sequences)."""
    t_all = time.perf_counter()
    say = progress
    cfg, rep = prep.cfg, prep.rep
    if not shards:
        raise EvaluationInputError("synthetic table is empty (no shards to merge); nothing to evaluate")
    metas = [_meta(s) for s in shards]
    n_syn = sum(m["n_sequences"] for m in metas)
    if any(m["cap"] for m in metas) and ({m["total"] for m in metas} != {n_syn}
                                         or any(m["start"] != sum(x["n_sequences"] for x in metas[:i])
                                                for i, m in enumerate(metas))):
        raise EvaluationInputError(
            f"the synthetic shards hold {n_syn} sequences at positions that do not match their plan; "
            "gate.audit_max_synthetic needs every shard of one plan, in order: rerun the audit shards")
    offsets = np.cumsum([0] + [m["units_span"] for m in metas])

    def cat(key: str, units: bool = False) -> np.ndarray:
        return np.concatenate([np.asarray(s[key]) + (offsets[i] if units else 0) for i, s in enumerate(shards)])

    t = time.perf_counter()
    train_ref, holdout_ref = prep.train_ref, prep.holdout_ref
    syn_units = cat("dcr_units", units=True)
    units = (syn_units, train_ref.units, holdout_ref.units)
    dcr = dcr_from_neighbours(cat("d_train"), cat("i_train"), cat("d_holdout"), cat("i_holdout"), len(train_ref),
                              len(holdout_ref), cfg.confidence, units, _merge_search([m["search"] for m in metas]))
    exact_hits, row_hits, row_n = (sum(m[k] for m in metas) for k in ("exact_hits", "row_hits", "row_n"))
    syn_rate = row_hits / row_n if row_n else 0.0
    privacy: dict[str, Any] = {
        "dcr": dcr.summary() | {"synthetic_sequences_total": n_syn},
        "exact_copies": {"count": int(exact_hits), "rate": float(exact_hits / n_syn) if n_syn else 0.0,
                         "n_synthetic": n_syn},
        "row_matches": {"synthetic_rate": float(syn_rate), "holdout_rate": prep.holdout_rows["rate"],
                        "excess": float(syn_rate) - prep.holdout_rows["rate"], "n_synthetic_rows": int(row_n),
                        "n_holdout_rows": prep.holdout_rows["n"]},
    }
    if prep.parts_on:
        names = metas[0]["parts"]
        neighbours = {name: tuple(cat(f"part{j}_{key}") for key in ("d_train", "i_train", "d_holdout", "i_holdout"))
                      for j, name in enumerate(names)}
        privacy["dcr_parts"] = parts_from_neighbours(rep, neighbours, units, len(train_ref), len(holdout_ref),
                                                     privacy["dcr"], cfg.confidence, prep.seed)
    if prep.membership_on:
        if say:
            say(f"membership inference: {len(train_ref)} members and {len(holdout_ref)} non-members against "
                f"{dcr.n_synthetic} synthetic")
        d_mem = np.minimum.reduce([np.asarray(s["mem_train"]) for s in shards])
        d_non = np.minimum.reduce([np.asarray(s["mem_holdout"]) for s in shards])
        privacy["membership"] = attack_from_distances(d_mem, d_non, cfg.confidence, train_ref.units, holdout_ref.units)
    timings = {"encode": prep.timings.get("encode", 0.0) + sum(m["timings"]["encode"] for m in metas),
               "privacy": time.perf_counter() - t + sum(m["timings"]["privacy"] for m in metas)}

    syn = fidelity_sample(prep, shards, metas, offsets)
    ctx = MetricContext(
        rep=rep, seed=prep.seed, n_seeds=cfg.seeds, max_sequences=cfg.max_sequences, holdout=holdout_ref,
        train=TrainSettings(**cfg.classifier), progress=say,
    )
    results: dict[str, MetricResult] = {}
    for m in metrics if metrics is not None else default_metrics():
        t = time.perf_counter()
        if say:
            say(f"fidelity: {m.name}" + (f" (seeded sample of {len(syn)} of {n_syn} synthetic sequences)"
                                         if len(syn) < n_syn else ""))
        results[m.name] = m.compute(train_ref, syn, ctx)
        timings[m.name] = time.perf_counter() - t

    sizes = {"train": prep.inputs["train"]["sequences"], "holdout": prep.inputs["holdout"]["sequences"],
             "synthetic": n_syn}
    gate = decide(cfg, sizes, results, privacy)
    timings["total"] = time.perf_counter() - t_all + timings["encode"] + sum(m["timings"]["privacy"] for m in metas)
    compact = all(m["compact"] for m in metas)
    inputs = {**prep.inputs, "synthetic": {"rows": int(sum(m["n_rows"] for m in metas)), "sequences": n_syn}}
    result = EvaluationResult(
        gate=gate, metrics=results, privacy=privacy, sizes={r: inputs[r] for r in ROLES}, balance=prep.balance,
        representation={
            **prep.representation, "distance_dimensions": int(train_ref.flat(compact).shape[1]),
            "fitted_on": "train", "encoder": "TableEncoder(levels=False) knots, continuous quantile-normal map",
        },
        timings=timings, dataset=prep.schema.name, schema_fingerprint=prep.schema.fingerprint(), seed=prep.seed,
        gate_config=cfg,
        artifacts={"rep": rep, "real": train_ref, "synthetic": syn, "dcr": dcr, "ranges": prep.ranges},
    )
    if say:
        say(f"gate {'PASSED' if gate.passed else 'FAILED'}: {gate.reason}")
    if out_dir is not None:
        write_outputs(result, out_dir, progress=say)
    return result


def fidelity_sample(prep: AuditPrep, shards: Sequence[Mapping[str, Any]], metas: list[dict],
                    offsets: np.ndarray) -> EncodedSet:
    """The global bottom-``max_sequences`` of the shards' candidates by seeded content key (ties by
    position), in the order of the synthetic sequences; loads one shard's candidates at a time."""
    keys = [np.asarray(s["sample_key"]) for s in shards]
    locs = [np.asarray(s["sample_local"]) for s in shards]
    key = np.concatenate(keys)
    shard = np.concatenate([np.full(len(k), i, np.int64) for i, k in enumerate(keys)])
    local = np.concatenate(locs)
    k = min(len(key), int(prep.cfg.max_sequences))
    keep = np.zeros(len(key), bool)
    keep[np.lexsort((local, shard, key))[:k]] = True
    picked: dict[str, list[np.ndarray]] = {f: [] for f in _SET_FIELDS}
    pos = 0
    for i, s in enumerate(shards):
        mine = np.flatnonzero(keep[pos:pos + len(keys[i])])  # candidates are stored in position order
        pos += len(keys[i])
        if len(mine) == 0:
            continue
        for f in _SET_FIELDS:
            a = np.asarray(s[f"sample_{f}"])[mine]
            picked[f].append(a + offsets[i] if f == "units" else a)
    if not picked["dyn"]:  # no synthetic sequence at all: an empty set of the right shape
        empty = {f: np.asarray(shards[0][f"sample_{f}"])[:0] for f in _SET_FIELDS}
        return EncodedSet(name="synthetic", **empty)
    return EncodedSet(name="synthetic", **{f: np.concatenate(v) for f, v in picked.items()})


# ------------------------------------------------------------------------------------------------
# staging files
# ------------------------------------------------------------------------------------------------
def save_prep(prep: AuditPrep, folder: str | Path) -> Path:
    """``<folder>/prepared.pkl`` (atomically, mode 0600: encoded real references)."""
    import os

    from synth_pipeline.io_utils import atomic_write

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            pickle.dump(prep, fh, protocol=pickle.HIGHEST_PROTOCOL)
        os.chmod(tmp, 0o600)

    return atomic_write(Path(folder) / PREP_FILE, write)


def load_prep(folder: str | Path) -> AuditPrep:
    """Read what :func:`save_prep` wrote (only ever a file this pipeline staged in its private folder)."""
    p = Path(folder) / PREP_FILE
    if not p.exists():
        raise FileNotFoundError(f"no prepared audit at {p}; run the audit's prepare step first")
    with open(p, "rb") as fh:
        prep = pickle.load(fh)  # noqa: S301 - our own staging file (0600 in a 0700 folder)
    if not isinstance(prep, AuditPrep):
        raise TypeError(f"{p} does not hold a prepared audit")
    return prep


def shard_path(folder: str | Path, index: int) -> Path:
    return Path(folder) / SHARD_FILE.format(int(index))


def save_shard(result: Mapping[str, np.ndarray], folder: str | Path) -> Path:
    """``<folder>/audit-<index>.npz`` atomically (no pickled objects: plain arrays and a JSON meta)."""
    import os

    from synth_pipeline.io_utils import atomic_write

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.savez(fh, **result)
        os.chmod(tmp, 0o600)

    return atomic_write(shard_path(folder, _meta(result)["index"]), write)


def load_shard(folder: str | Path, index: int) -> Any:
    """A shard's arrays, read lazily (``np.load`` of the npz: each array when first used)."""
    return np.load(shard_path(folder, index), allow_pickle=False)
