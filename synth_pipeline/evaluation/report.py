"""``report.html``: one standalone, offline page (inline CSS, plots as base64 PNG; no script, no CDN).

Order: the verdict, the table of gate checks, the fidelity metrics, then plots: marginals per column,
correlation matrices real vs synthetic, autocorrelation, DCR histograms train vs holdout, and the
decoder-dependency diagnostic when a release attached it.

Legible at 100 % zoom on a laptop screen (1366 px wide): every plot is its own image, drawn at
twice its displayed resolution and shown at a size where one point of the figure is one CSS pixel,
so fonts (``PLOT_STYLE``: at least ``MIN_FONT_PX``) are at least 10 px on screen; plots sit in a
grid of at most two columns (one on narrow windows), wide ones span the page, none is wider than
the page. ``tests/test_report_layout.py`` renders a report in headless Chromium and checks this.

Aggregates only. Nothing in the page is a real row or cell: numeric columns are drawn as binned
histograms in the column's own units, only inside the range the model protects (its ends are a
random 5th-7th extreme entity, interpolated: never a real extreme; values beyond them fall in the
end bins) and every bar of the real histogram holds values of at least ``min_level_units`` train
sequences (sparser bins are merged with a neighbour); axis ticks are round numbers, never data.
Category bars name only levels seen in at least ``min_level_units`` train entities (rarer ones are
merged into <other>), numbers are printed with 3 significant digits, and identifiers never reach
the evaluation at all. ``tests/test_evaluation.py`` samples distinctive real values and asserts
none is in the HTML.
"""

from __future__ import annotations

import html
import math
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import matplotlib
import matplotlib.dates
import matplotlib.ticker
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import EngFormatter, MaxNLocator, PercentFormatter
from scipy.special import ndtr

from synth_pipeline.evaluation.dependency import COLLAPSE_THRESHOLD
from synth_pipeline.evaluation.fidelity.autocorrelation import acf
from synth_pipeline.evaluation.fidelity.correlation import correlation_matrix
from synth_pipeline.evaluation.fidelity.marginals import column_values

# The figure style, size and PNG encoding live in plotting.py (dependency.py draws with them too);
# re-exported here. The report calls png_b64 through this module (tests record every figure by
# patching report.png_b64).
from synth_pipeline.evaluation.plotting import (  # noqa: F401 - re-exports
    MIN_FONT_PX,
    PLOT_H,
    PLOT_STYLE,
    PLOT_W,
    RENDER_DPI,
    new_figure,
    plot_style,
    png_b64,
    png_size,
)

if TYPE_CHECKING:
    from synth_pipeline.evaluation.result import EvaluationResult

REAL, SYN, HOLD = "#1f77b4", "#d62728", "#2ca02c"
MAX_MARGINAL_PLOTS = 24
MAX_CORR_FEATURES = 30
MAX_ACF_PLOTS = 12
HIST_BINS = 30

CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px auto;max-width:1150px;color:#222;
line-height:1.4;padding:0 16px;font-size:15px}
h1{font-size:1.5em;margin-bottom:4px}h2{font-size:1.25em;margin-top:32px;border-bottom:1px solid #ddd;padding-bottom:4px}
.verdict{font-size:1.35em;font-weight:700;padding:14px 18px;border-radius:6px;margin:14px 0}
.pass{background:#e6f4ea;color:#0b6b2b;border:2px solid #0b6b2b}.fail{background:#fdecea;color:#a11;border:2px solid #a11}
.reason{font-size:.8em;font-weight:400;margin-top:4px;overflow-wrap:anywhere}
table{border-collapse:collapse;width:100%;font-size:.9em;table-layout:fixed}th,td{border:1px solid #ddd;padding:5px 7px;
text-align:left;vertical-align:top;overflow-wrap:break-word}th{background:#f4f4f4}td.name{font-family:monospace;font-size:.95em}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
tr.failed td{background:#fff4f4}.ok{color:#0b6b2b;font-weight:700}.bad{color:#a11;font-weight:700}
.meta{color:#555;font-size:.9em;overflow-wrap:anywhere}.note{color:#444;font-size:.9em}
.plots{display:grid;grid-template-columns:repeat(auto-fill,minmax(510px,1fr));gap:14px 20px;margin:10px 0 20px}
figure{margin:0;min-width:0}figure.wide{grid-column:1/-1}
figure img{display:block;max-width:100%;height:auto;border:1px solid #eee}
figcaption{color:#444;font-size:.88em;margin-top:4px}
"""

# what each number means (the gate checks some of them as a ratio or with an allowance)
METRIC_MEANING = {
    "discriminative": "|accuracy - 0.5| of a GRU classifier telling synthetic from real (train-sample) sequences; "
                      "0 = indistinguishable, 0.5 = fully separable",
    "temporal_discriminative": "the same classifier score on step-to-step changes (first differences): "
                               "dynamics only",
    "predictive": "forecast error (MAE, quantile-normal units) on real train sequences of a one-step-ahead GRU "
                  "trained on synthetic sequences; the gate checks it as a ratio to the same forecaster trained "
                  "on holdout",
    "correlation": "mean |difference| between real and synthetic correlations of step features",
    "marginals": "worst column's distance between real and synthetic value distributions (KS for numeric, "
                 "total variation for categorical); 0 = identical",
    "autocorrelation": "mean |difference| between real and synthetic autocorrelations at lags 1-12",
    "static_consistency": "share of synthetic entities whose static attributes stay constant over time",
}
CHECK_MEANING = {
    "evidence": "sequences in the smallest of the three tables",
    "dcr_share": "upper confidence bound of the share of synthetic sequences closer to train than to holdout "
                 "(0.5 = no memorization)",
    "dcr_parts": "upper bound (Bonferroni over the parts) of the worst DCR share over parts of the records: whole "
                 "entity, static attributes, dynamics (0.5 = no partial copy)",
    "membership": "upper confidence bound of a distance membership-inference attack's AUC (0.5 = membership "
                  "cannot be told)",
    "exact_copies": "synthetic sequences identical to a train sequence",
    "row_matches": "excess rate of synthetic rows equal to a train row over the holdout's own rate",
    "discriminative": "classifier |accuracy - 0.5| (0 = indistinguishable)",
    "temporal_discriminative": "classifier |accuracy - 0.5| on step-to-step changes",
    "predictive": "ratio of forecast errors: trained on synthetic / trained on holdout (1 = as useful as real "
                  "data); the Metrics table shows the error itself",
    "correlation": "mean |correlation difference| (threshold includes the holdout's own difference)",
    "marginals": "worst column's distribution distance (threshold includes the holdout's own)",
    "autocorrelation": "mean |autocorrelation difference| (threshold includes the holdout's own)",
    "static_consistency": "share of entities with constant static attributes",
}


def _fmt(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        v = float(v)
        if not math.isfinite(v):
            return "n/a" if math.isnan(v) else "inf"
        if v != 0 and v.is_integer() and abs(v) < 1e6:
            return str(int(v))
        return f"{v:.3g}"
    return html.escape(str(v))


# ------------------------------------------------------------------------------------------------
# figures -> images
# ------------------------------------------------------------------------------------------------
def img_tag(data: str, alt: str, dpi: int = RENDER_DPI) -> str:
    w, h = png_size(data)
    scale = 72 / dpi
    return (f'<img alt="{html.escape(alt)}" width="{round(w * scale)}" height="{round(h * scale)}" '
            f'src="data:image/png;base64,{data}">')


def _figure_html(fig: Figure, alt: str, caption: str = "", wide: bool = False) -> str:
    cap = f"<figcaption>{caption}</figcaption>" if caption else ""
    cls = " class='wide'" if wide else ""
    return f"<figure{cls}>{img_tag(png_b64(fig), alt)}{cap}</figure>"


def _grid(figures: list[str]) -> str:
    return "<div class='plots'>" + "".join(figures) + "</div>"


# ------------------------------------------------------------------------------------------------
# marginals
# ------------------------------------------------------------------------------------------------
def _numeric_samples(es: Any, rep: Any, col: str) -> tuple[np.ndarray, np.ndarray, float] | None:
    """Quantile-normal values of a numeric column, the sequence each comes from, and the missing share."""
    feats, sfeats = rep.features, rep.static_features
    num = [i for i, f in enumerate(feats) if f.column == col and f.group == "num"]
    if num:
        j = num[0]
        obs = es.num_observed[..., j] & es.present
        seq = np.nonzero(obs)[0]
        missing = 1.0 - obs.sum() / max(int(es.present.sum()), 1)
        return es.dyn[..., j][obs].astype(np.float64), seq, float(missing)
    snum = [i for i, f in enumerate(sfeats) if f.column == col and f.group == "static_num"]
    if snum:
        v = es.static[:, snum[0]].astype(np.float64)
        miss = [i for i, f in enumerate(sfeats) if f.column == col and f.group == "static_miss"]
        keep = es.static[:, miss[0]] <= 0.5 if miss else np.ones(len(v), bool)
        return v[keep], np.flatnonzero(keep), float(1.0 - keep.mean()) if len(v) else 0.0
    return None


def _to_data_units(qmap: Any, z: np.ndarray) -> np.ndarray:
    """Inverse of ``representation.continuous_forward`` (piecewise linear between the knots)."""
    knots, probs = np.asarray(qmap.knots, dtype=float), np.asarray(qmap.probs, dtype=float)
    uk, first = np.unique(knots, return_index=True)
    if len(uk) == 1:
        return np.full(z.shape, uk[0])
    last = np.r_[first[1:] - 1, len(knots) - 1]
    mid = 0.5 * (probs[first] + probs[last])
    return np.interp(ndtr(z), mid, uk)


def k_anonymous_edges(values: np.ndarray, seq: np.ndarray, lo: float, hi: float, k: int,
                      n_bins: int = HIST_BINS) -> np.ndarray:
    """Bin edges over [lo, hi] (values beyond count in the end bins) such that every bin holds values
    of at least ``k`` distinct sequences: equal bins, sparse ones merged with their neighbour."""
    if not hi > lo:
        return np.array([lo - 0.5, lo + 0.5])
    edges = np.linspace(lo, hi, n_bins + 1)
    b = np.clip(np.searchsorted(edges, np.clip(values, lo, hi), side="right") - 1, 0, n_bins - 1)
    n_seq = int(seq.max()) + 1 if seq.size else 1
    hits = np.zeros((n_bins, n_seq), bool)
    hits[b, seq] = True
    keep, acc = [edges[0]], np.zeros(n_seq, bool)
    for i in range(n_bins):
        acc |= hits[i]
        if acc.sum() >= k:
            keep.append(edges[i + 1])
            acc[:] = False
    if acc.any() and len(keep) > 2:  # a sparse remainder joins the last kept bin
        keep.pop()
    if len(keep) < 2:
        return np.array([lo, hi])
    keep[-1] = edges[-1]
    return np.asarray(keep)


def _numeric_marginal(ax: Any, col: str, rep: Any, real: Any, syn: Any, ranges: dict[str, Any]) -> str:
    """Histogram of one numeric column; returns what the x axis shows (for the caption)."""
    from synth_pipeline.transformers.numeric import DatetimeTransformer

    a = _numeric_samples(real, rep, col)
    b = _numeric_samples(syn, rep, col)
    codec = rep.codec(col)
    rng_ = ranges.get(col)
    is_time = isinstance(codec, DatetimeTransformer)
    (va, sa, ma), (vb, _, mb) = a, b
    k = rep.min_level_units
    if rng_ is not None and np.isfinite(rng_).all():
        lo, hi = float(rng_[0]), float(rng_[1])
        va, vb = _to_data_units(codec.qmap, va), _to_data_units(codec.qmap, vb)
        axis = "data units"
    else:  # no protected range known: the quantile-normal score
        lo, hi = -3.8, 3.8
        axis = "quantile-normal score"
    log = axis == "data units" and not is_time and lo > 0 and hi / lo > 50  # heavy right tail: log bins
    if log:
        edges = np.exp(k_anonymous_edges(np.log(np.clip(va, lo, hi)), sa, np.log(lo), np.log(hi), k))
    else:
        edges = k_anonymous_edges(va, sa, lo, hi, k)
    width = np.diff(np.log(edges)) if log else np.diff(edges)
    for v, color, label in ((va, REAL, "real (train)"), (vb, SYN, "synthetic")):
        counts = np.histogram(np.clip(v, edges[0], edges[-1]), edges)[0]  # beyond the range: the end bins
        dens = counts / max(v.size, 1) / width
        x = edges
        if is_time and axis == "data units":
            x = (edges / 86400e9)  # days since 1970: matplotlib's date numbers
        ax.stairs(dens, x, fill=True, alpha=0.45, color=color, label=label)
        ax.stairs(dens, x, color=color, lw=1.2)
    ax.set_yticks([])
    ax.set_ylabel("share of values")
    if axis == "data units":
        if is_time:
            ax.xaxis_date()
            ax.set_xlabel(f"{col} (date)")
        else:
            if log:
                ax.set_xscale("log")
            ax.xaxis.set_major_formatter(EngFormatter(sep=""))
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
            ax.set_xlabel(f"{col} (its own units{', log scale' if log else ''})")
        if is_time:
            ax.set_xlim(edges[0] / 86400e9, edges[-1] / 86400e9)
        else:
            ax.set_xlim(edges[0], edges[-1])
    else:
        ax.set_xlabel(f"{col}: quantile-normal score")
    if is_time and axis == "data units":
        ax.xaxis.set_major_locator(matplotlib.dates.AutoDateLocator(maxticks=6))
    elif not log:
        ax.xaxis.set_major_locator(MaxNLocator(6))
    miss = f"; missing: real {ma:.0%}, synthetic {mb:.0%}" if max(ma, mb) > 0 else ""
    return miss


def _marginal_plots(result: EvaluationResult) -> str:
    rep = result.artifacts["rep"]
    real, syn = result.artifacts["real"], result.artifacts["synthetic"]
    ranges = result.artifacts.get("ranges") or {}
    cols = (rep.numeric_columns + rep.categorical_columns + rep.static_columns)[:MAX_MARGINAL_PLOTS]
    if not cols:
        return "<p class='note'>No modelled columns.</p>"
    rng = np.random.default_rng(0)
    per = result.metrics.get("marginals")
    dist = per.details.get("per_column", {}) if per is not None else {}
    figs = []
    for col in cols:
        d = dist.get(col)
        kind_num = _numeric_samples(real, rep, col) is not None
        static = col in rep.static_columns
        what = "KS distance" if kind_num else "total variation distance"
        title = col[:40] + (" (static)" if static else "")
        if kind_num:
            fig = new_figure()
            ax = fig.subplots()
            extra = _numeric_marginal(ax, col, rep, real, syn, ranges)
            wide = False
        else:
            _, a, n_lv = column_values(real, rep, col, rng)
            _, b, _ = column_values(syn, rep, col, rng)
            labels = [lb[:22] for lb in rep.slot_labels[col]]
            wide = n_lv > 8
            fig = new_figure(min(15.0, max(PLOT_W, 0.55 * n_lv + 2)) if wide else PLOT_W, PLOT_H + 0.9)
            ax = fig.subplots()
            pa = np.bincount(a[a >= 0], minlength=n_lv)[:n_lv] / max(a.size, 1)
            pb = np.bincount(b[b >= 0], minlength=n_lv)[:n_lv] / max(b.size, 1)
            x = np.arange(n_lv)
            ax.bar(x - 0.2, pa, 0.4, color=REAL, label="real (train)")
            ax.bar(x + 0.2, pb, 0.4, color=SYN, label="synthetic")
            ax.set_xticks(x)
            ax.set_xticklabels(labels, rotation=35, ha="right", rotation_mode="anchor")
            ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
            ax.set_ylabel("share of sequences" if static else "share of steps")
            extra = ""
        ax.set_title(title + (f"   {what} {d:.2f} (lower is better)" if d is not None else ""))
        ax.legend(loc="best", framealpha=0.8)
        caption = extra.lstrip("; ")
        figs.append(_figure_html(fig, f"marginal distribution of {col}", html.escape(caption), wide))
    more = len(rep.numeric_columns + rep.categorical_columns + rep.static_columns) - len(cols)
    note = f"<p class='note'>First {len(cols)} columns shown; {more} more in metrics.json.</p>" if more > 0 else ""
    intro = (
        "<p class='note'>Real (train sample, blue) against synthetic (red). Numeric columns: histograms in the "
        "column's own units over the range the model protects (its ends lie inside the real extremes, so values "
        f"beyond them are counted in the end bins); every bin holds values of at least {rep.min_level_units} real "
        "sequences (sparser bins are merged). Categorical columns: the share of each level seen in at least "
        f"{rep.min_level_units} train entities; rarer levels are merged into &lt;other&gt;. Above each plot, the column's "
        "distance between the two: Kolmogorov-Smirnov (numeric) or total variation (categorical), 0 = same "
        "distribution, 1 = disjoint.</p>"
    )
    return intro + _grid(figs) + note


# ------------------------------------------------------------------------------------------------
# correlation, autocorrelation, DCR
# ------------------------------------------------------------------------------------------------
def _correlation_plots(result: EvaluationResult) -> str:
    rep = result.artifacts["rep"]
    real, syn = result.artifacts["real"], result.artifacts["synthetic"]
    idx = [i for i, f in enumerate(rep.features) if f.group in ("num", "miss")][:MAX_CORR_FEATURES]
    if len(idx) < 2:
        return "<p class='note'>Fewer than two numeric step features: no correlation matrix.</p>"
    rng = np.random.default_rng(0)
    cr = correlation_matrix(real, rng)[np.ix_(idx, idx)]
    cs = correlation_matrix(syn, rng)[np.ix_(idx, idx)]
    names = [rep.features[i].name[:22] for i in idx]
    n = len(idx)
    wide = n > 12
    side = min(14.0, 3.2 + 0.42 * n) if wide else PLOT_W
    figs = []
    for m, title, cmap, lo in ((cr, "real (train)", "coolwarm", -1), (cs, "synthetic", "coolwarm", -1),
                               (np.abs(cr - cs), "|real - synthetic|", "Reds", 0)):
        fig = new_figure(side, min(side, max(4.2, 2.0 + 0.42 * n)))
        ax = fig.subplots()
        im = ax.imshow(m, vmin=lo, vmax=1, cmap=cmap)
        ax.set_title(f"correlation: {title}")
        ax.set_xticks(range(n))
        ax.set_yticks(range(n))
        ax.set_xticklabels(names, rotation=45, ha="right", rotation_mode="anchor")
        ax.set_yticklabels(names)
        if n <= 8:
            for i in range(n):
                for j in range(n):
                    ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=11,
                            color="white" if abs(m[i, j]) > 0.6 else "#222")
        cb = fig.colorbar(im, ax=ax, shrink=0.9)
        cb.set_label("|difference|" if lo == 0 else "Pearson correlation")
        figs.append(_figure_html(fig, f"correlation matrix, {title}", wide=wide))
    return (
        "<p class='note'>Pearson correlations between numeric step features (quantile-normal scores; "
        "<code>:missing</code> = the column's missing-value flag), pooled over all steps: -1 to 1. The third matrix "
        "is their absolute difference (0 = same dependency, lower is better).</p>" + _grid(figs)
    )


def _acf_plots(result: EvaluationResult) -> str:
    rep = result.artifacts["rep"]
    real, syn = result.artifacts["real"], result.artifacts["synthetic"]
    n_num = len(rep.numeric_columns)
    T = real.present.shape[1]
    max_lag = min(12, T - 2)
    if n_num == 0 or max_lag < 1:
        return "<p class='note'>No numeric step column or sequences too short: no autocorrelation plot.</p>"
    ar, _ = acf(real, n_num, max_lag)
    asyn, _ = acf(syn, n_num, max_lag)
    lags = np.arange(1, max_lag + 1)
    figs = []
    for j in range(min(n_num, MAX_ACF_PLOTS)):
        fig = new_figure()
        ax = fig.subplots()
        ax.plot(lags, ar[:, j], "o-", color=REAL, ms=4, label="real (train)")
        ax.plot(lags, asyn[:, j], "s--", color=SYN, ms=4, label="synthetic")
        ax.axhline(0, color="#999", lw=0.8)
        ax.set_ylim(-1.05, 1.05)
        ax.set_title(rep.numeric_columns[j][:40])
        ax.set_xlabel("lag (steps)")
        ax.set_ylabel("autocorrelation")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(loc="best", framealpha=0.8)
        figs.append(_figure_html(fig, f"autocorrelation of {rep.numeric_columns[j]}"))
    return (
        "<p class='note'>Within-sequence autocorrelation of each numeric column (each sequence's own mean removed) "
        "at lags of 1 to " + str(max_lag) + " steps: 1 = the value persists, 0 = no memory. Closer curves are "
        "better.</p>" + _grid(figs)
    )


def _dcr_plot(result: EvaluationResult) -> str:
    dcr = result.artifacts["dcr"]
    a, b = dcr.d_train, dcr.d_holdout
    both = np.concatenate([a, b])
    both = both[np.isfinite(both)]
    if both.size == 0:
        return ""
    hi = float(np.percentile(both, 99)) or 1.0
    bins = np.linspace(0, hi * 1.02, 40)
    fig = new_figure(11.0, 4.2)
    ax = fig.subplots()
    ax.hist(np.clip(a, 0, bins[-1]), bins=bins, alpha=0.55, color=REAL, label="to nearest train-sample sequence")
    ax.hist(np.clip(b, 0, bins[-1]), bins=bins, alpha=0.55, color=HOLD, label="to nearest holdout sequence")
    ax.set_xlabel("distance of each synthetic sequence to its nearest real sequence (encoded space)")
    ax.set_ylabel("synthetic sequences")
    ax.set_title(f"DCR share {dcr.share:.3f}, interval [{dcr.ci_low:.3f}, {dcr.ci_high:.3f}] (0.5 is ideal)")
    ax.legend(loc="best", framealpha=0.8)
    return _grid([_figure_html(fig, "distance to closest record histograms", wide=True)])


# ------------------------------------------------------------------------------------------------
# tables
# ------------------------------------------------------------------------------------------------
def _checks_table(result: EvaluationResult) -> str:
    rows = []
    for c in result.gate.checks:
        mark = '<span class="ok">pass</span>' if c.passed else '<span class="bad">FAIL</span>'
        rows.append(
            f"<tr class='{'passed' if c.passed else 'failed'}'><td class='name'>{html.escape(c.name)}</td>"
            f"<td>{html.escape(CHECK_MEANING.get(c.name, c.kind))}</td>"
            f"<td class='num'>{_fmt(c.value)}</td><td class='num'>{html.escape(c.direction)} {_fmt(c.threshold)}</td>"
            f"<td>{mark}</td><td>{html.escape(c.explanation)}</td></tr>"
        )
    return (
        "<p class='note'>Each check compares one value with the gate's threshold: the release passes only if every "
        "check does.</p>"
        "<table id='checks'><colgroup><col style='width:17%'><col style='width:25%'><col style='width:7%'>"
        "<col style='width:8%'><col style='width:6%'><col></colgroup><thead><tr><th>check</th><th>value measured</th><th>value</th><th>threshold</th>"
        "<th>result</th><th>explanation</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
    )


def _metrics_table(result: EvaluationResult) -> str:
    rows = []
    for m in result.metrics.values():
        extra = ""
        if m.name == "predictive" and m.details.get("ratio") is not None:
            extra = f"ratio to the holdout-trained forecaster's error {_fmt(m.details['ratio'])} (the gate's value)"
        elif "holdout_baseline" in m.details:
            extra = f"holdout vs train: {_fmt(m.details['holdout_baseline'])} (what two real samples differ by)"
        elif "accuracy_per_seed" in m.details:
            extra = "classifier accuracy per seed " + ", ".join(_fmt(a) for a in m.details["accuracy_per_seed"])
        meaning = METRIC_MEANING.get(m.name, "")
        details = "; ".join(t for t in (html.escape(m.note), extra) if t)
        rows.append(
            f"<tr><td class='name'>{html.escape(m.name)}</td><td>{html.escape(meaning)}</td><td class='num'>{_fmt(m.value)}</td>"
            f"<td>{m.goal} is better</td><td class='num'>[{_fmt(m.range[0])}, {_fmt(m.range[1])}]</td>"
            f"<td>{details}</td></tr>"
        )
    p = result.privacy
    d = p["dcr"]
    rows.append(
        f"<tr><td class='name'>dcr_share</td><td>share of synthetic sequences closer to a train sequence than to a holdout one"
        f"</td><td class='num'>{_fmt(d['share'])}</td><td>0.5 is ideal; higher means memorization</td>"
        f"<td class='num'>[0, 1]</td>"
        f"<td>{int(round(100 * d['confidence']))}% interval [{_fmt(d['ci_low'])}, {_fmt(d['ci_high'])}], "
        f"{d['n_synthetic']} synthetic vs {d['n_reference']} + {d['n_reference']} reference sequences</td></tr>"
    )
    rows.append(
        f"<tr><td class='name'>nndr</td><td>median ratio of the distances to the nearest and second-nearest train sequence"
        f"</td><td class='num'>{_fmt(d.get('nndr_train_median'))}</td><td>higher is better; near 0: near-copies</td>"
        f"<td class='num'>[0, 1]</td><td>to holdout {_fmt(d.get('nndr_holdout_median'))}</td></tr>"
    )
    parts = p.get("dcr_parts")
    if parts is not None:
        each = ", ".join(f"{html.escape(k)} {_fmt(v['share'])}" for k, v in parts["parts"].items())
        rows.append(
            f"<tr><td class='name'>dcr_parts</td><td>worst DCR share over parts of the records (whole entity, static "
            f"attributes, dynamics; random column subsets reported, not gated): partial copies</td><td class='num'>"
            f"{_fmt(parts['worst_share'])}</td><td>0.5 is ideal; higher means a part is copied</td>"
            f"<td class='num'>[0, 1]</td><td>worst: {html.escape(parts['worst'])}, upper bound "
            f"{_fmt(parts['worst_ci_high'])} at {_fmt(100 * parts['confidence'])}% (Bonferroni over {parts['k']} "
            f"parts); {each}</td></tr>"
        )
    mia = p.get("membership")
    if mia is not None:
        rows.append(
            f"<tr><td class='name'>membership</td><td>membership inference: AUC of an attacker flagging real entities "
            f"close to a synthetic one as training members</td><td class='num'>{_fmt(mia['auc'])}</td>"
            f"<td>0.5 is ideal; higher means membership leaks</td><td class='num'>[0, 1]</td>"
            f"<td>{int(round(100 * mia['confidence']))}% interval [{_fmt(mia['ci_low'])}, {_fmt(mia['ci_high'])}]; "
            f"true positives at {_fmt(100 * mia['fpr'])}% false positives: {_fmt(mia['tpr_at_fpr'])}; "
            f"{mia['n_members']} members vs {mia['n_non_members']} non-members</td></tr>"
        )
    ec, rm = p["exact_copies"], p["row_matches"]
    rows.append(f"<tr><td class='name'>exact_copies</td><td>whole synthetic sequences equal to a train sequence</td>"
                f"<td class='num'>{ec['count']}</td><td>0 is required</td><td class='num'>"
                f"[0, {ec['n_synthetic']}]</td><td></td></tr>")
    rows.append(f"<tr><td class='name'>row_matches</td><td>share of synthetic rows equal to a train row</td>"
                f"<td class='num'>{_fmt(rm['synthetic_rate'])}</td><td>lower is better</td>"
                f"<td class='num'>[0, 1]</td><td>holdout's own rate {_fmt(rm['holdout_rate'])}</td></tr>")
    return ("<table id='metrics'><colgroup><col style='width:17%'><col style='width:33%'><col style='width:7%'>"
            "<col style='width:12%'><col style='width:8%'><col></colgroup><thead><tr><th>metric</th><th>what the value is</th><th>value</th><th>direction</th>"
            "<th>range</th><th>details</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>")


def _dependency_section(result: EvaluationResult) -> str:
    """The decoder's dependency on its latent (evaluation/dependency.py), when the caller attached a
    ``DependencyResult`` as ``result.artifacts["dependency"]`` (aggregates over generated sequences)."""
    dep = result.artifacts.get("dependency")
    if dep is None:
        return ""
    s = dep.summary()
    verdict = "<span class='bad'>collapsed</span>" if s["collapsed"] else "<span class='ok'>not collapsed</span>"
    with plot_style():
        img = img_tag(png_b64(dep.heatmap_figure()), "decoder dependency on its latent")
    return (
        "<h2>Decoder dependency on the latent</h2>"
        "<p>How much the model's decoder uses its latent sequence rather than the calendar: each output step's "
        "change from the decoder's output at an all-zero input is split among its inputs (integrated gradients, "
        "PSLD paper Sec. 3.2); the shares of a step add up to 1 but are signed, so a share above 1 next to a "
        "negative one means two inputs push that step in opposite directions.</p>"
        f"<p>Latent dependency {_fmt(s['latent_dependency'])} ({verdict}: below {_fmt(COLLAPSE_THRESHOLD)} the decoder "
        f"ignores its latent; higher is better), of which the step's own latent step {_fmt(s['local_latent_dependency'])}; "
        f"calendar context {_fmt(s['context_dependency'])}; latent share at the first / last analysed output step "
        f"{_fmt(s['latent_dependency_first'])} / {_fmt(s['latent_dependency_last'])}. Averaged over "
        f"{s['n_sequences']} generated sequences, the first {s['output_steps']} of {s['latent_steps']} steps; "
        f"shares add up to 1 within {_fmt(s['completeness_gap'])} (numerical integration error).</p>"
        f"<div class='plots'><figure class='wide'>{img}</figure></div>"
    )


def _guarantee_line(g: dict[str, Any] | None) -> str:
    """The first screen's statement of the formal guarantee (model.privacy), or that there is none."""
    if not g:
        return ("<p id='dp' class='meta'>Differential privacy: off (model.privacy not set); privacy rests on the "
                "protections and the memorization audit below.</p>")
    return (f"<p id='dp' class='meta'><b>Differential privacy: (&epsilon; = {g['epsilon']:.3g}, &delta; = "
            f"{g['delta']:.3g})</b> per entity, {html.escape(str(g['accountant']).upper())} accountant over DP-SGD "
            f"(noise multiplier {g['noise_multiplier']:.3g}, clipping {g['max_grad_norm']:.3g}) and the encoder's "
            f"statistics; target &epsilon; = {g['target_epsilon']:.3g}.</p>")


def render_report(result: EvaluationResult) -> str:
    g = result.gate
    verdict = "PASSED" if g.passed else "FAILED"
    sizes = result.sizes
    size_text = ", ".join(f"{k}: {v['sequences']} sequences ({v['rows']} rows)" for k, v in sizes.items())
    rep_info = result.representation
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    with plot_style():
        marginals, corr, acfs, dcr = (_marginal_plots(result), _correlation_plots(result), _acf_plots(result),
                                      _dcr_plot(result))
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>Synthetic data audit: {html.escape(result.dataset)}</title><style>{CSS}</style></head><body>",
        f"<h1>Synthetic data audit: {html.escape(result.dataset)}</h1>",
        f"<div class='meta'>schema {html.escape(result.schema_fingerprint)} &middot; seed {result.seed} &middot; {stamp}</div>",
        f"<div id='verdict' class='verdict {'pass' if g.passed else 'fail'}'>Release gate {verdict}"
        f"<div class='reason'>{html.escape(g.reason)}</div></div>",
        f"<p class='meta'>{html.escape(size_text)}. {html.escape(result.balance['rule'])}.</p>",
        _guarantee_line(result.guarantee),
        "<h2>Gate checks</h2>", _checks_table(result),
        "<h2>Metrics</h2>", _metrics_table(result),
        f"<p class='note'>All metrics use one representation fitted on train only: {rep_info['sequence_length']} steps x "
        f"{rep_info['step_features']} step features + {rep_info['static_features']} static features per sequence "
        f"(numerics in quantile-normal space, missing flags, one-hot categories with levels seen in fewer than "
        f"{result.artifacts['rep'].min_level_units} train entities merged into &lt;other&gt;).</p>",
        "<h2>Marginal distributions</h2>", marginals,
        "<h2>Correlation matrices</h2>", corr,
        "<h2>Autocorrelation</h2>", acfs,
        "<h2>Memorization audit: distance to closest record</h2>", dcr,
        "<p class='note'>Each synthetic sequence's distance to its nearest train-sample sequence and to its nearest "
        "holdout sequence (equal-size sets). A generator that memorizes puts the first histogram left of the second; "
        "the DCR share is the fraction of synthetic sequences nearer to train than to holdout.</p>",
        _dependency_section(result),
        "<p class='note'>This page holds aggregates only: no real row, value or identifier.</p>",
        "</body></html>",
    ]
    return "\n".join(parts)
