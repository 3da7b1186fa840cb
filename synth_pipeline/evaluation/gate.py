"""Release gate: thresholds (``GateConfig``, YAML) applied to the evaluation -> ``GateResult``.

Every check reports its value, threshold, direction (``<=`` or ``>=``), whether it passed and a
one-line explanation. Privacy uses the *upper* confidence bound of the DCR share (a bootstrap over
the reference entities and the synthetic sequences); any exact copy of a train sequence fails; too
few sequences to decide fails with "insufficient evidence", and so do reference sets too small for
a perfect generator's upper bound to stay under the DCR threshold (the message says how many
holdout entities would be needed).
Partial copies and membership: the worst DCR share over parts of the records (static attributes
alone, dynamics alone, random column subsets; ``privacy/parts.py``, Bonferroni over the parts) and a
distance membership-inference attack's AUC (``privacy/membership.py``) are judged the same way, by
their upper bounds. When sequences are windows of entities, every interval resamples entities.
A threshold set to ``null`` in the YAML disables that check (it is then not listed).

Allowance for sampling noise: for the cheap distribution metrics (marginals, correlation,
autocorrelation) the same metric is computed between the holdout and the train sample, i.e. how
far two *real* samples of these sizes already are; the effective threshold is the configured one
plus that amount. On a panel of ~50 entities per side a 37-level entity attribute or the price
level of the stocks differs that much between any two real samples (measured: worst-column
distance 0.42-0.57 across three entity splits of nasdaq100), so a fixed threshold would fail a
perfect generator there while being far too loose for a table with thousands of entities.

The default thresholds are calibrated in ``tests/test_calibration.py`` on two shared datasets:
real holdout sequences used as "synthetic" pass every check, while verbatim train copies,
near-copies (train + 1 % noise), column-wise independent noise with the right marginals and
time-shuffled sequences each fail (the test file prints the measured values).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from statistics import NormalDist
from typing import Any

import yaml

from synth_pipeline.errors import ConfigError
from synth_pipeline.io_utils import read_yaml

INSUFFICIENT = "insufficient evidence"


def _exists(text: str) -> bool:
    try:
        return Path(text).exists()
    except OSError:
        return False


@dataclass
class GateConfig:
    # evidence and balance
    min_sequences: int = 100  # holdout, train and synthetic sequences needed to decide
    max_size_ratio: float = 20.0  # train/holdout size ratio beyond which the input is refused
    confidence: float = 0.95  # two-sided level of the DCR share interval
    # privacy
    dcr_share_max: float | None = 0.60  # upper confidence bound of the DCR share
    exact_copies_max: int | None = 0  # synthetic sequences identical to a train sequence
    row_match_excess_max: float | None = 0.05  # synthetic - holdout exact row-match rate
    dcr_parts_share_max: float | None = 0.60  # worst part's DCR share upper bound (Bonferroni over parts)
    membership_auc_max: float | None = 0.60  # upper bound of the distance attack's AUC
    # fidelity
    discriminative_max: float | None = 0.20
    temporal_discriminative_max: float | None = 0.20
    predictive_ratio_max: float | None = 1.5  # MAE(train on synthetic) / MAE(train on holdout)
    correlation_max: float | None = 0.05  # + the holdout's own value
    marginals_max: float | None = 0.10  # + the holdout's own value
    autocorrelation_max: float | None = 0.10  # + the holdout's own value
    static_consistency_min: float | None = 1.0
    # how the trained metrics are computed
    seeds: int = 3
    max_sequences: int = 10_000  # per side for the GRU metrics
    # None: the distance audit covers every synthetic sequence (exact). An integer caps the number of
    # synthetic sequences whose DCR is computed (a seeded random subset; the share's interval is then
    # over that subset); exact-copy and row-match checks always cover every synthetic sequence.
    audit_max_synthetic: int | None = None
    classifier: dict[str, Any] = field(default_factory=dict)  # overrides of fidelity._gru.TrainSettings
    # compute DCR by parts and the membership attack even when their checks are disabled (report only)
    report_all_privacy: bool = True

    def __post_init__(self) -> None:
        from synth_pipeline.evaluation.fidelity._gru import TrainSettings

        known = {f.name for f in dataclasses.fields(TrainSettings)}
        bad = sorted(set(self.classifier) - known)
        if bad:
            raise ConfigError(f"gate.classifier: unknown key(s) {bad}; valid keys: {sorted(known)}")
        if not 0.5 <= self.confidence < 1:
            raise ConfigError(f"gate.confidence must be in [0.5, 1), got {self.confidence}")
        if self.min_sequences < 2:
            raise ConfigError("gate.min_sequences must be at least 2")
        if self.max_size_ratio < 1:
            raise ConfigError("gate.max_size_ratio must be at least 1")
        if self.seeds < 1:
            raise ConfigError("gate.seeds must be at least 1 (3 by default)")
        if self.audit_max_synthetic is not None and self.audit_max_synthetic < self.min_sequences:
            raise ConfigError("gate.audit_max_synthetic must be null or at least min_sequences")

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> GateConfig:
        d = dict(d or {})
        if "gate" in d and isinstance(d["gate"], dict) and len(d) == 1:
            d = dict(d["gate"])
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown gate setting(s) {unknown}; valid settings: {sorted(known)}")
        for k, v in d.items():
            if k == "classifier":
                if not isinstance(v, dict):
                    raise ConfigError("gate.classifier must be a mapping")
                continue
            if k == "report_all_privacy":
                if not isinstance(v, bool):
                    raise ConfigError(f"gate.report_all_privacy must be true or false, got {v!r}")
                continue
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
                raise ConfigError(f"gate.{k} must be a number{' or null' if k.endswith(('_max', '_min')) else ''}, got {v!r}")
            if v is None and not k.endswith(("_max", "_min", "_synthetic")):
                raise ConfigError(f"gate.{k} cannot be null")
        return cls(**d)

    @classmethod
    def from_yaml(cls, path_or_text: str | Path) -> GateConfig:
        text = str(path_or_text)
        is_path = isinstance(path_or_text, Path) or (
            "\n" not in text and (":" not in text or text.lower().endswith((".yaml", ".yml")) or _exists(text))
        )
        data = read_yaml(Path(text) if is_path else None, "gate config", ConfigError,
                         text=None if is_path else text)
        if data is not None and not isinstance(data, dict):
            raise ConfigError("gate config must be a mapping of setting: value")
        return cls.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


@dataclass
class Check:
    name: str
    value: float | None
    threshold: float | None
    direction: str  # "<=" (value must not exceed threshold) or ">="
    passed: bool
    explanation: str
    kind: str = "fidelity"  # evidence | privacy | fidelity

    def to_dict(self) -> dict[str, Any]:
        return {k: _finite(v) for k, v in dataclasses.asdict(self).items()}


def _finite(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None if math.isnan(v) else ("inf" if v > 0 else "-inf")
    return v


@dataclass
class GateResult:
    passed: bool
    checks: list[Check]
    reason: str

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "reason": self.reason, "checks": [c.to_dict() for c in self.checks]}


def _fmt(v: float | None) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, int) or float(v).is_integer() and abs(v) >= 1:
        return str(int(v))
    return f"{v:.3g}"


def _threshold_check(name: str, value: float | None, threshold: float, direction: str, kind: str, what: str,
                     ok_text: str, bad_text: str) -> Check:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return Check(name, None, threshold, direction, True, f"not applicable to this data ({what})", kind)
    ok = value <= threshold if direction == "<=" else value >= threshold
    rel = direction if ok else (">" if direction == "<=" else "<")
    text = ok_text if ok else bad_text
    return Check(name, float(value), threshold, direction, bool(ok), f"{what} {_fmt(value)} {rel} {_fmt(threshold)}: {text}", kind)


def _share_check(name: str, what: str, d: dict[str, Any], threshold: float, confidence: float, ok_text: str,
                 bad_text: str, pct_text: str | None = None) -> Check:
    """A proportion whose ideal is 0.5 (a DCR share, an attack's AUC) judged by its upper bound; when
    the reference sets are too small for 0.5 to clear the threshold: insufficient evidence."""
    hi, share, n = d["ci_high"], d["share"], d["n_synthetic"]
    ok = hi <= threshold
    pct = pct_text or f"{int(round(100 * confidence))}%"
    se, n_ref = d.get("se"), d.get("n_reference_units") or d.get("n_reference", 0)
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    reach = 0.5 + z * se if se is not None and math.isfinite(se) else None  # a perfect generator's bound
    if ok:
        text = (f"{what} upper {pct} bound {_fmt(hi)} <= {_fmt(threshold)} (point {_fmt(share)}, n={n}, {n_ref} "
                f"reference entities per side): {ok_text}")
    elif d.get("ci_low", 0.0) > threshold:
        text = f"{what} {pct} interval [{_fmt(d['ci_low'])}, {_fmt(hi)}] lies above {_fmt(threshold)}: {bad_text}"
    elif reach is not None and reach > threshold:
        need = math.ceil(n_ref * (z * se / max(threshold - 0.5, 1e-9)) ** 2)
        text = (f"{INSUFFICIENT}: with {n_ref} holdout entities the {what} {_fmt(share)} is known "
                f"only to +-{_fmt(z * se)}, so even a generator with no memorization (0.5) would reach {_fmt(reach)} > "
                f"{_fmt(threshold)}; about {need} holdout entities are needed to decide (raise "
                f"split.holdout_fraction or release a table with more entities)")
    elif share <= threshold:
        text = (f"{INSUFFICIENT}: {what} {_fmt(share)} but its upper {pct} bound {_fmt(hi)} > "
                f"{_fmt(threshold)} with {n} synthetic sequences and {n_ref} reference entities per side; generate "
                f"more (or hold out more entities) to decide")
    else:
        text = f"{what} upper {pct} bound {_fmt(hi)} > {_fmt(threshold)} (point {_fmt(share)}): {bad_text}"
    return Check(name, hi, threshold, "<=", ok, text, "privacy")


def decide(cfg: GateConfig, sizes: dict[str, int], fidelity: dict[str, Any], privacy: dict[str, Any]) -> GateResult:
    """Apply ``cfg`` to the evaluation's numbers. ``fidelity`` maps metric name -> MetricResult,
    ``privacy`` holds ``dcr`` (DCRResult.summary()), ``exact_copies`` and ``row_matches``."""
    checks: list[Check] = []
    n_min = min(sizes["holdout"], sizes["synthetic"], sizes["train"])
    short = [f"{k} has {v}" for k, v in sizes.items() if v < cfg.min_sequences]
    checks.append(Check(
        "evidence", float(n_min), float(cfg.min_sequences), ">=", not short,
        (f"{INSUFFICIENT}: " + ", ".join(short) + f" sequences; at least {cfg.min_sequences} each are needed to decide")
        if short else f"{sizes['synthetic']} synthetic, {sizes['holdout']} holdout and {sizes['train']} train sequences "
        f"(>= {cfg.min_sequences} each)",
        "evidence",
    ))
    dcr = privacy["dcr"]
    if cfg.dcr_share_max is not None:
        checks.append(_share_check("dcr_share", "DCR share", dcr, cfg.dcr_share_max, cfg.confidence,
                                   "synthetic sequences are not closer to train than to unseen holdout sequences",
                                   "synthetic sequences sit closer to train records than to unseen ones (memorization)"))
    parts = privacy.get("dcr_parts")
    # one gated part (no static attributes: the whole entity is the dynamics) is dcr_share itself
    if cfg.dcr_parts_share_max is not None and parts is not None and parts["k"] > 1:
        worst = parts["parts"][parts["worst"]]
        summary = {"share": worst["share"], "ci_low": worst["ci_low"], "ci_high": worst["ci_high"], "se": worst["se"],
                   "n_synthetic": dcr["n_synthetic"], "n_reference": dcr.get("n_reference", 0),
                   "n_reference_units": dcr.get("n_reference_units")}
        checks.append(_share_check(
            "dcr_parts", f"worst DCR share by part ({parts['worst']}, of {parts['k']} parts)", summary,
            cfg.dcr_parts_share_max, parts["confidence"],
            "neither the entity attributes nor the dynamics are copied (column subsets: reported in metrics.json)",
            "a part of the records (see privacy.dcr_parts in metrics.json) sits closer to train than to unseen "
            "entities: partial copies", pct_text=f"{100 * parts['confidence']:.1f}% (Bonferroni over {parts['k']} parts)"))
    mia = privacy.get("membership")
    if cfg.membership_auc_max is not None and mia is not None:
        checks.append(_share_check(
            "membership", "membership-inference AUC (distance attack)",
            {"share": mia["auc"], "ci_low": mia["ci_low"], "ci_high": mia["ci_high"], "se": mia["se"],
             "n_synthetic": dcr["n_synthetic"], "n_reference": mia["n_non_members"],
             "n_reference_units": mia.get("non_member_units")},
            cfg.membership_auc_max, cfg.confidence,
            "an attacker holding the release cannot tell training entities from unseen ones",
            "training entities sit closer to the release than unseen ones: membership can be inferred"))
    if cfg.exact_copies_max is not None:
        ec = privacy["exact_copies"]
        ok = ec["count"] <= cfg.exact_copies_max
        text = (f"{ec['count']} of {ec['n_synthetic']} synthetic sequences are exact copies of a train sequence"
                + ("" if ok else " (verbatim memorization)"))
        checks.append(Check("exact_copies", float(ec["count"]), float(cfg.exact_copies_max), "<=", ok, text, "privacy"))
    if cfg.row_match_excess_max is not None:
        rm = privacy["row_matches"]
        checks.append(_threshold_check(
            "row_matches", rm["excess"], cfg.row_match_excess_max, "<=", "privacy",
            f"exact row-match rate vs train: synthetic {_fmt(rm['synthetic_rate'])} - holdout {_fmt(rm['holdout_rate'])} =",
            "no more rows repeat train than real unseen rows do", "synthetic rows repeat train rows more than real unseen rows do",
        ))

    def fid(name: str, threshold: float | None, what: str, ok_text: str, bad_text: str, value_key: str | None = None,
            direction: str = "<=", allowance: bool = False) -> None:
        if threshold is None:
            return
        m = fidelity.get(name)
        if m is None:
            return
        value = m.details.get(value_key) if value_key else m.value
        if m.value is None:
            value = None
        base = m.details.get("holdout_baseline") if allowance else None
        if base is not None:
            what = f"{what} (threshold {_fmt(threshold)} + holdout's own {_fmt(base)})"
            threshold = float(threshold + base)
        c = _threshold_check(name, value, threshold, direction, "fidelity", what, ok_text, bad_text)
        if m.value is None:
            c.explanation = f"not applicable: {m.note.removeprefix('not applicable: ')}"
        checks.append(c)

    fid("discriminative", cfg.discriminative_max, "GRU classifier |accuracy - 0.5|",
        "a classifier barely tells synthetic from real sequences", "a classifier separates synthetic from real sequences")
    fid("temporal_discriminative", cfg.temporal_discriminative_max, "classifier on first differences |accuracy - 0.5|",
        "step-to-step dynamics look real", "step-to-step dynamics give synthetic sequences away")
    fid("predictive", cfg.predictive_ratio_max, "forecast MAE ratio (trained on synthetic / on holdout)",
        "synthetic data is about as useful for one-step forecasting as real data",
        "a forecaster trained on synthetic data is much worse on real data", value_key="ratio")
    fid("correlation", cfg.correlation_max, "mean |correlation difference|",
        "cross-feature dependencies are kept", "cross-feature dependencies are lost", allowance=True)
    fid("marginals", cfg.marginals_max, "worst column marginal distance",
        "every column's distribution matches", "a column's distribution differs (see metrics.json per_column)",
        allowance=True)
    fid("autocorrelation", cfg.autocorrelation_max, "mean |autocorrelation difference|",
        "persistence over time is kept", "persistence over time differs (temporal structure lost)", allowance=True)
    fid("static_consistency", cfg.static_consistency_min, "share of entities with constant static attributes",
        "entity attributes are constant", "some synthetic entities change their static attributes", direction=">=")
    failed = [c for c in checks if not c.passed]
    if not failed:
        reason = "all checks passed"
    elif any(INSUFFICIENT in c.explanation for c in failed):
        short = "; ".join(c.explanation.removeprefix(INSUFFICIENT + ": ") for c in failed if INSUFFICIENT in c.explanation)
        others = [c.name for c in failed if INSUFFICIENT not in c.explanation]
        # too few sequences: nothing measured on them decides. Otherwise a check failed outright (e.g.
        # memorization) decides the verdict, and missing evidence elsewhere comes second
        if others and checks[0].passed:
            reason = f"failed: {', '.join(others)}; also {INSUFFICIENT}: {short}"
        else:
            reason = f"{INSUFFICIENT}: {short}" + (f"; also failed: {', '.join(others)}" if others else "")
    else:
        reason = "failed: " + ", ".join(c.name for c in failed)
    return GateResult(passed=not failed, checks=checks, reason=reason)
