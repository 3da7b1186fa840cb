"""``report.html``: one standalone, offline page (inline CSS, plots as base64 PNG; no script, no CDN).

Order: the verdict, the table of gate checks, the fidelity metrics, then plots: marginals per column,
correlation matrices real vs synthetic, autocorrelation, DCR histograms train vs holdout.

Aggregates only. Nothing in the page is a real row or cell: numeric columns are drawn as histograms
in the train-fitted quantile-normal space (no value axis in data units), category bars name only
levels seen in at least ``min_level_units`` train entities (rarer ones are merged into <other>),
numbers are printed with 3 significant digits, and identifiers never reach the evaluation at all.
``tests/test_evaluation.py`` samples distinctive real values and asserts none is in the HTML.
"""

from __future__ import annotations

import base64
import html
import io
import math
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib.figure import Figure

from synth_pipeline.evaluation.dependency import COLLAPSE_THRESHOLD
from synth_pipeline.evaluation.fidelity.autocorrelation import acf
from synth_pipeline.evaluation.fidelity.correlation import correlation_matrix
from synth_pipeline.evaluation.fidelity.marginals import column_values

if TYPE_CHECKING:
    from synth_pipeline.evaluation import EvaluationResult

REAL, SYN, HOLD = "#1f77b4", "#d62728", "#2ca02c"
MAX_MARGINAL_PLOTS = 24
MAX_CORR_FEATURES = 30
MAX_ACF_PLOTS = 12

CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px auto;max-width:1150px;color:#222;
line-height:1.4;padding:0 16px}
h1{font-size:1.5em;margin-bottom:4px}h2{font-size:1.2em;margin-top:32px;border-bottom:1px solid #ddd;padding-bottom:4px}
.verdict{font-size:1.35em;font-weight:700;padding:14px 18px;border-radius:6px;margin:14px 0}
.pass{background:#e6f4ea;color:#0b6b2b;border:2px solid #0b6b2b}.fail{background:#fdecea;color:#a11;border:2px solid #a11}
.reason{font-size:.8em;font-weight:400;margin-top:4px}
table{border-collapse:collapse;width:100%;font-size:.88em}th,td{border:1px solid #ddd;padding:5px 7px;text-align:left;
vertical-align:top}th{background:#f4f4f4}td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
tr.failed td{background:#fff4f4}.ok{color:#0b6b2b;font-weight:700}.bad{color:#a11;font-weight:700}
.meta{color:#666;font-size:.85em}.plot{margin:10px 0 20px}.plot img{max-width:100%;border:1px solid #eee}
.note{color:#555;font-size:.85em}
"""


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


def _png(fig: Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=72, bbox_inches="tight", metadata={"Software": None})
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<div class="plot"><img alt="plot" src="data:image/png;base64,{data}"></div>'


def _grid(n: int, ncols: int = 4, w: float = 3.2, h: float = 2.4) -> tuple[Figure, list]:
    nrows = max(1, math.ceil(n / ncols))
    fig = Figure(figsize=(w * min(n, ncols), h * nrows))
    axes = fig.subplots(nrows, min(n, ncols), squeeze=False).ravel().tolist()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def _marginal_plots(result: EvaluationResult) -> str:
    rep = result.artifacts["rep"]
    real, syn = result.artifacts["real"], result.artifacts["synthetic"]
    cols = (rep.numeric_columns + rep.categorical_columns + rep.static_columns)[:MAX_MARGINAL_PLOTS]
    if not cols:
        return "<p class='note'>No modelled columns.</p>"
    rng = np.random.default_rng(0)
    per = result.metrics.get("marginals")
    dist = per.details.get("per_column", {}) if per is not None else {}
    fig, axes = _grid(len(cols))
    for ax, col in zip(axes, cols, strict=True):
        kind, a, n_lv = column_values(real, rep, col, rng)
        _, b, _ = column_values(syn, rep, col, rng)
        if kind == "num":
            a_obs, b_obs = a[a > -1e8], b[b > -1e8]
            bins = np.linspace(-3.8, 3.8, 31)
            ax.hist(np.clip(a_obs, -3.79, 3.79), bins=bins, density=True, alpha=0.5, color=REAL, label="real (train)")
            ax.hist(np.clip(b_obs, -3.79, 3.79), bins=bins, density=True, alpha=0.5, color=SYN, label="synthetic")
            ax.set_xlabel("quantile-normal score")
            ax.set_yticks([])
        else:
            labels = rep.slot_labels[col]
            pa = np.bincount(a[a >= 0], minlength=n_lv)[:n_lv] / max(a.size, 1)
            pb = np.bincount(b[b >= 0], minlength=n_lv)[:n_lv] / max(b.size, 1)
            x = np.arange(n_lv)
            ax.bar(x - 0.2, pa, 0.4, color=REAL, label="real (train)")
            ax.bar(x + 0.2, pb, 0.4, color=SYN, label="synthetic")
            ax.set_xticks(x)
            ax.set_xticklabels([lb[:14] for lb in labels], rotation=60, fontsize=6, ha="right")
        d = dist.get(col)
        ax.set_title(f"{col[:24]}" + (f"  (d={d:.2f})" if d is not None else ""), fontsize=8)
        ax.tick_params(labelsize=6)
    axes[0].legend(fontsize=6)
    fig.tight_layout()
    more = len(rep.numeric_columns + rep.categorical_columns + rep.static_columns) - len(cols)
    note = f"<p class='note'>First {len(cols)} columns shown; {more} more in metrics.json.</p>" if more > 0 else ""
    return _png(fig) + note


def _correlation_plots(result: EvaluationResult) -> str:
    rep = result.artifacts["rep"]
    real, syn = result.artifacts["real"], result.artifacts["synthetic"]
    idx = [i for i, f in enumerate(rep.features) if f.group in ("num", "miss")][:MAX_CORR_FEATURES]
    if len(idx) < 2:
        return "<p class='note'>Fewer than two numeric step features: no correlation matrix.</p>"
    rng = np.random.default_rng(0)
    cr = correlation_matrix(real, rng)[np.ix_(idx, idx)]
    cs = correlation_matrix(syn, rng)[np.ix_(idx, idx)]
    names = [rep.features[i].name[:18] for i in idx]
    fig = Figure(figsize=(min(15, 3 + 1.1 * len(idx)) * 1.0, min(5.2, 1.6 + 0.32 * len(idx))))
    axes = fig.subplots(1, 3)
    for ax, m, title, cmap in ((axes[0], cr, "real (train)", "coolwarm"), (axes[1], cs, "synthetic", "coolwarm"),
                               (axes[2], np.abs(cr - cs), "|difference|", "Reds")):
        im = ax.imshow(m, vmin=0 if cmap == "Reds" else -1, vmax=1, cmap=cmap)
        ax.set_title(title, fontsize=9)
        ax.set_xticks(range(len(names)))
        ax.set_yticks(range(len(names)))
        ax.set_xticklabels(names, rotation=70, fontsize=6, ha="right")
        ax.set_yticklabels(names, fontsize=6)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    return _png(fig)


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
    cols = list(range(min(n_num, MAX_ACF_PLOTS)))
    fig, axes = _grid(len(cols), w=3.0, h=2.2)
    lags = np.arange(1, max_lag + 1)
    for ax, j in zip(axes, cols, strict=True):
        ax.plot(lags, ar[:, j], "o-", color=REAL, ms=3, label="real (train)")
        ax.plot(lags, asyn[:, j], "s--", color=SYN, ms=3, label="synthetic")
        ax.axhline(0, color="#999", lw=0.5)
        ax.set_ylim(-1.05, 1.05)
        ax.set_title(rep.numeric_columns[j][:24], fontsize=8)
        ax.set_xlabel("lag (steps)", fontsize=7)
        ax.tick_params(labelsize=6)
    axes[0].legend(fontsize=6)
    fig.tight_layout()
    return _png(fig)


def _dcr_plot(result: EvaluationResult) -> str:
    dcr = result.artifacts["dcr"]
    a, b = dcr.d_train, dcr.d_holdout
    both = np.concatenate([a, b])
    both = both[np.isfinite(both)]
    if both.size == 0:
        return ""
    hi = float(np.percentile(both, 99)) or 1.0
    bins = np.linspace(0, hi * 1.02, 40)
    fig = Figure(figsize=(7.5, 3.2))
    ax = fig.subplots()
    ax.hist(np.clip(a, 0, bins[-1]), bins=bins, alpha=0.55, color=REAL, label="to nearest train-sample sequence")
    ax.hist(np.clip(b, 0, bins[-1]), bins=bins, alpha=0.55, color=HOLD, label="to nearest holdout sequence")
    ax.set_xlabel("distance of each synthetic sequence (encoded space)", fontsize=8)
    ax.set_ylabel("synthetic sequences", fontsize=8)
    ax.set_title(f"DCR share {dcr.share:.3f}  [{dcr.ci_low:.3f}, {dcr.ci_high:.3f}]", fontsize=9)
    ax.legend(fontsize=7)
    ax.tick_params(labelsize=7)
    fig.tight_layout()
    return _png(fig)


def _checks_table(result: EvaluationResult) -> str:
    rows = []
    for c in result.gate.checks:
        mark = '<span class="ok">pass</span>' if c.passed else '<span class="bad">FAIL</span>'
        rows.append(
            f"<tr class='{'passed' if c.passed else 'failed'}'><td>{html.escape(c.name)}</td><td>{html.escape(c.kind)}</td>"
            f"<td class='num'>{_fmt(c.value)}</td><td class='num'>{html.escape(c.direction)} {_fmt(c.threshold)}</td>"
            f"<td>{mark}</td><td>{html.escape(c.explanation)}</td></tr>"
        )
    return (
        "<table id='checks'><thead><tr><th>check</th><th>kind</th><th>value</th><th>threshold</th><th>result</th>"
        "<th>explanation</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
    )


def _metrics_table(result: EvaluationResult) -> str:
    rows = []
    for m in result.metrics.values():
        extra = ""
        if m.name == "predictive" and m.details.get("ratio") is not None:
            extra = f"ratio to holdout-trained baseline {_fmt(m.details['ratio'])}"
        elif "holdout_baseline" in m.details:
            extra = f"holdout vs train: {_fmt(m.details['holdout_baseline'])}"
        elif "accuracy_per_seed" in m.details:
            extra = "accuracy per seed " + ", ".join(_fmt(a) for a in m.details["accuracy_per_seed"])
        rows.append(
            f"<tr><td>{html.escape(m.name)}</td><td class='num'>{_fmt(m.value)}</td><td>{m.goal} is better</td>"
            f"<td class='num'>[{_fmt(m.range[0])}, {_fmt(m.range[1])}]</td><td>{html.escape(m.note) or extra}</td></tr>"
        )
    p = result.privacy
    d = p["dcr"]
    rows.append(
        f"<tr><td>dcr_share</td><td class='num'>{_fmt(d['share'])}</td><td>0.5 is ideal</td><td class='num'>[0, 1]</td>"
        f"<td>{int(round(100 * d['confidence']))}% interval [{_fmt(d['ci_low'])}, {_fmt(d['ci_high'])}], "
        f"{d['n_synthetic']} synthetic vs {d['n_reference']} + {d['n_reference']} reference sequences</td></tr>"
    )
    rows.append(
        f"<tr><td>nndr</td><td class='num'>{_fmt(d.get('nndr_train_median'))}</td><td>near 0: near-copies</td>"
        f"<td class='num'>[0, 1]</td><td>median nearest/second-nearest distance ratio to train; to holdout "
        f"{_fmt(d.get('nndr_holdout_median'))}</td></tr>"
    )
    ec, rm = p["exact_copies"], p["row_matches"]
    rows.append(f"<tr><td>exact_copies</td><td class='num'>{ec['count']}</td><td>0 is required</td><td class='num'>"
                f"[0, {ec['n_synthetic']}]</td><td>whole synthetic sequences equal to a train sequence</td></tr>")
    rows.append(f"<tr><td>row_matches</td><td class='num'>{_fmt(rm['synthetic_rate'])}</td><td>lower is better</td>"
                f"<td class='num'>[0, 1]</td><td>share of synthetic rows equal to a train row; holdout's own rate "
                f"{_fmt(rm['holdout_rate'])}</td></tr>")
    return ("<table id='metrics'><thead><tr><th>metric</th><th>value</th><th>goal</th><th>range</th><th>details</th>"
            "</tr></thead><tbody>" + "".join(rows) + "</tbody></table>")


def _dependency_section(result: EvaluationResult) -> str:
    """The decoder's dependency on its latent (evaluation/dependency.py), when the caller attached a
    ``DependencyResult`` as ``result.artifacts["dependency"]`` (aggregates over generated sequences)."""
    dep = result.artifacts.get("dependency")
    if dep is None:
        return ""
    s = dep.summary()
    verdict = "<span class='bad'>collapsed</span>" if s["collapsed"] else "<span class='ok'>not collapsed</span>"
    return (
        "<h2>Decoder dependency on the latent</h2>"
        f"<p>Latent dependency {_fmt(s['latent_dependency'])} ({verdict}; threshold {_fmt(COLLAPSE_THRESHOLD)}), "
        f"own-step {_fmt(s['local_latent_dependency'])}, calendar context {_fmt(s['context_dependency'])}; "
        f"first / last output step {_fmt(s['latent_dependency_first'])} / {_fmt(s['latent_dependency_last'])}; "
        f"{s['n_sequences']} generated sequences, rows sum to 1 within {_fmt(s['completeness_gap'])}.</p>"
        f'<div class="plot"><img alt="dependency heatmap" src="data:image/png;base64,{dep.heatmap_png()}"></div>'
        "<p class='note'>Integrated-gradient dependency measures (PSLD paper, Sec. 3.2): each row splits one decoder "
        "output step among the latent steps and the calendar context. Near 0 latent dependency means the decoder "
        "ignores its latent (posterior collapse).</p>"
    )


def render_report(result: EvaluationResult) -> str:
    g = result.gate
    verdict = "PASSED" if g.passed else "FAILED"
    sizes = result.sizes
    size_text = ", ".join(f"{k}: {v['sequences']} sequences ({v['rows']} rows)" for k, v in sizes.items())
    rep_info = result.representation
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>Synthetic data audit: {html.escape(result.dataset)}</title><style>{CSS}</style></head><body>",
        f"<h1>Synthetic data audit: {html.escape(result.dataset)}</h1>",
        f"<div class='meta'>schema {html.escape(result.schema_fingerprint)} &middot; seed {result.seed} &middot; {stamp}</div>",
        f"<div id='verdict' class='verdict {'pass' if g.passed else 'fail'}'>Release gate {verdict}"
        f"<div class='reason'>{html.escape(g.reason)}</div></div>",
        f"<p class='meta'>{html.escape(size_text)}. {html.escape(result.balance['rule'])}.</p>",
        "<h2>Gate checks</h2>", _checks_table(result),
        "<h2>Metrics</h2>", _metrics_table(result),
        f"<p class='note'>All metrics use one representation fitted on train only: {rep_info['sequence_length']} steps x "
        f"{rep_info['step_features']} step features + {rep_info['static_features']} static features per sequence "
        f"(numerics in quantile-normal space, missing flags, one-hot categories with levels seen in fewer than "
        f"{result.artifacts['rep'].min_level_units} train entities merged into &lt;other&gt;).</p>",
        "<h2>Marginal distributions</h2>", _marginal_plots(result),
        "<h2>Correlation matrices</h2>", _correlation_plots(result),
        "<h2>Autocorrelation</h2>", _acf_plots(result),
        "<h2>Memorization audit: distance to closest record</h2>", _dcr_plot(result),
        "<p class='note'>Each synthetic sequence's distance to its nearest train-sample sequence and to its nearest "
        "holdout sequence (equal-size sets). A generator that memorizes puts the first histogram left of the second."
        "</p>",
        _dependency_section(result),
        "<p class='note'>This page holds aggregates only: no real row, value or identifier.</p>",
        "</body></html>",
    ]
    return "\n".join(parts)
