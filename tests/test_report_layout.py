"""The audit report a reviewer reads at 100 % zoom on a laptop screen (issue 19 item 5): legible plot
fonts, plots that are not shrunk, nothing wider than the window, numeric marginals in data units but
binned inside the protected range, and no real value in the page. Rendered in headless Chromium
(Debian package ``chromium``; the browser checks skip without it)."""

from __future__ import annotations

import base64
import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import matplotlib.text
import numpy as np
import pytest
from _eval_data import nasdaq

from synth_pipeline.encoding import TableEncoder
from synth_pipeline.evaluation import baselines as B
from synth_pipeline.evaluation import evaluate, protected_ranges, report, write_outputs
from synth_pipeline.evaluation.dependency import DependencyResult
from synth_pipeline.transformers.protection import Protection

PACKAGE_DATA = Path(__file__).resolve().parents[1] / "synth_pipeline" / "data"
WINDOW = (1366, 900)
MIN_PLOT_PX = 480  # no plot displayed narrower
FAST = {"seeds": 1, "classifier": {"min_steps": 8, "max_steps": 8}}


def _dependency(T_out: int = 128, T_in: int = 177) -> DependencyResult:
    """A signed matrix like a real decoder's (shares above 1 and below 0), 128 of 177 steps."""
    rng = np.random.default_rng(0)
    lat = np.zeros((T_out, T_in))
    lat[np.arange(T_out), np.arange(T_out)] = rng.normal(0.3, 0.4, T_out)
    return DependencyResult(lat, 1 - lat.sum(1), 32, 32, 3e-5, 0)


@pytest.fixture(scope="module")
def audit(tmp_path_factory):
    """A small audit with the dependency section; records every figure's fonts and x labels."""
    raw, train, hold, schema = nasdaq(PACKAGE_DATA)
    res = evaluate(train, hold, B.holdout_as_synthetic(hold, schema), schema, gate_config=FAST)
    res.artifacts["dependency"] = _dependency()
    figures: dict[str, dict] = {}
    real_png = report.png_b64

    def recording(fig):
        data = real_png(fig)
        texts = [t for t in fig.findobj(matplotlib.text.Text) if t.get_visible() and t.get_text().strip()]
        figures[data] = {"min_pt": min(t.get_fontsize() for t in texts),
                         "xlabels": [ax.get_xlabel() for ax in fig.axes]}
        return data

    mp = pytest.MonkeyPatch()
    mp.setattr(report, "png_b64", recording)
    try:
        out = tmp_path_factory.mktemp("report") / "out"
        write_outputs(res, out)
    finally:
        mp.undo()
    return raw, train, hold, schema, res, out, figures


def _images(page: str) -> list[tuple[int, int, str]]:
    """(displayed width, height, base64 data) of every image, from the tag's own attributes."""
    return [(int(w), int(h), d) for w, h, d in
            re.findall(r'<img alt="[^"]*" width="(\d+)" height="(\d+)" src="data:image/png;base64,([^"]+)"', page)]


def test_plot_fonts_are_at_least_10px_as_displayed(audit):
    *_, out, figures = audit
    page = (out / "report.html").read_text()
    imgs = _images(page)
    assert len(imgs) == page.count("<img") >= 13  # 6 marginals, 3 correlation, 3 autocorrelation, DCR, dependency
    for w, _, data in imgs:
        natural = report.png_size(data)[0]
        px_per_pt = report.RENDER_DPI / 72 * w / natural  # CSS px of one figure point at the displayed size
        assert figures[data]["min_pt"] * px_per_pt >= report.MIN_FONT_PX >= 10
        assert w >= MIN_PLOT_PX, f"a plot displayed {w} px wide"
        assert w <= WINDOW[0] - 2 * 16, "a plot wider than the page"


def test_numeric_marginals_are_in_data_units_inside_the_protected_range(audit):
    raw, train, hold, schema, res, out, figures = audit
    labels = [lb for f in figures.values() for lb in f["xlabels"]]
    for col in ("Open", "Close", "MarketCap"):
        assert any(lb.startswith(f"{col} (its own units") for lb in labels), labels
    assert any(lb == "Volume (its own units, log scale)" for lb in labels)  # heavy tail: log bins
    # the ranges are the synthesizer's own: what TableEncoder keeps with the same protection
    enc = TableEncoder(schema, protection=Protection()).fit(train)
    ranges = protected_ranges(train, schema, Protection())
    for c in enc.codecs:
        if c.is_numeric:
            assert ranges[c.name] == pytest.approx(c.qmap.bounds)
            real = train[c.name].dropna()
            assert real.min() < ranges[c.name][0] < ranges[c.name][1] < real.max()  # never a real extreme


def test_histogram_bins_hold_at_least_k_sequences():
    rng = np.random.default_rng(1)
    values = np.r_[rng.normal(0, 1, 500), [8.0, 9.0]]  # two outlying sequences
    seq = np.r_[np.repeat(np.arange(50), 10), [50, 51]]
    edges = report.k_anonymous_edges(values, seq, -3, 9.5, k=5)
    b = np.clip(np.searchsorted(edges, np.clip(values, -3, 9.5), side="right") - 1, 0, len(edges) - 2)
    per_bin = [np.unique(seq[b == i]).size for i in range(len(edges) - 1)]
    assert min(per_bin) >= 5 and edges[0] == -3 and edges[-1] == 9.5


def test_every_number_is_labelled(audit):
    *_, out, _ = audit
    page = (out / "report.html").read_text()
    metrics = re.search(r"<table id='metrics'>.*?</table>", page, re.S).group(0)
    checks = re.search(r"<table id='checks'>.*?</table>", page, re.S).group(0)
    predictive_metric = re.search(r"<td class='name'>predictive</td><td>([^<]*)</td>", metrics).group(1)
    predictive_check = re.search(r"<td class='name'>predictive</td><td>([^<]*)</td>", checks).group(1)
    assert "MAE" in predictive_metric and "ratio" in predictive_check  # the two values are told apart
    for table in (metrics, checks):
        for row in re.findall(r"<tr[^>]*><td class='name'>.*?</tr>", table, re.S):
            meaning = re.findall(r"<td>([^<]*)</td>", row)[0]
            assert len(meaning) > 10, row
    for row in re.findall(r"<tr><td class='name'>.*?</tr>", metrics, re.S):
        assert re.search(r"better|ideal|required", row), row  # a direction for every metric
    dep = page[page.index("Decoder dependency on the latent"):]
    assert "signed" in dep and "above 1" in dep and "negative" in dep  # shares outside [0, 1] explained


def test_report_holds_no_real_value(audit):
    from test_evaluation import _distinctive_values, _strip_images

    raw, train, hold, *_, out, _ = audit
    text = _strip_images((out / "report.html").read_text())
    values = _distinctive_values(raw, train, hold)
    leaked = [v for v in values if re.search(rf"(?<![\w.]){re.escape(v)}(?![\w])", text)]
    assert not leaked, leaked[:10]


# ------------------------------------------------------------------------------------------------
# headless Chromium at a laptop's window size
# ------------------------------------------------------------------------------------------------
MEASURE = """<script>
window.addEventListener('load', () => {
  const W = window.innerWidth, els = [...document.body.querySelectorAll('*')];
  const text = els.filter(e => [...e.childNodes].some(n => n.nodeType === 3 && n.textContent.trim()));
  const cells = [...document.querySelectorAll('td, th')];
  const out = {
    window: W, page: document.documentElement.scrollWidth,
    imgs: [...document.images].map(i => ({w: i.clientWidth, attr: +i.getAttribute('width'),
                                          right: i.getBoundingClientRect().right})),
    min_font: Math.min(...text.map(e => parseFloat(getComputedStyle(e).fontSize))),
    overflowing_cells: cells.filter(c => c.scrollWidth > c.clientWidth + 1).length,
    beyond_window: els.filter(e => e.getBoundingClientRect().right > W + 0.5).length,
  };
  const pre = document.createElement('pre'); pre.id = 'layout'; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""


def _chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("chromium is not installed (Debian package 'chromium'; .ci/run installs it)")
    return exe


def _run(exe: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
             f"--user-data-dir={profile}", f"--window-size={WINDOW[0]},{WINDOW[1]}"]
    return subprocess.run([exe, *flags, *args], capture_output=True, text=True, timeout=180)


def test_report_layout_in_headless_chromium(audit, tmp_path):
    exe = _chromium()
    *_, res, out, _ = audit
    page = (out / "report.html").read_text()
    assert "<script" not in page and "http://" not in page and "https://" not in page  # offline, no CDN
    probe = tmp_path / "probe.html"  # a copy with a measuring script; the report itself has none
    probe.write_text(page.replace("</body>", MEASURE + "</body>"))
    dom = _run(exe, tmp_path / "profile", "--virtual-time-budget=10000", "--dump-dom", probe.as_uri())
    m = re.search(r'<pre id="layout">(.*?)</pre>', dom.stdout, re.S)
    assert m, f"no layout measured; chromium stderr: {dom.stderr[-800:]}"
    lay = json.loads(html.unescape(m.group(1)))
    assert lay["window"] == WINDOW[0]
    assert lay["page"] <= lay["window"], f"horizontal overflow: page {lay['page']} px in a {lay['window']} px window"
    assert lay["beyond_window"] == 0 and lay["overflowing_cells"] == 0
    assert lay["min_font"] >= 12, f"page text at {lay['min_font']} px"
    assert len(lay["imgs"]) >= 13
    for img in lay["imgs"]:
        assert img["w"] == img["attr"] >= MIN_PLOT_PX, img  # shown at its designed size, not squeezed
        assert img["right"] <= lay["window"]
    verdict = "Release gate PASSED" if res.passed else "Release gate FAILED"
    assert verdict in dom.stdout
    for c in res.gate.checks:
        assert f'<td class="name">{c.name}</td>' in dom.stdout

    shot = tmp_path / "report.png"
    _run(exe, tmp_path / "profile", f"--screenshot={shot}", (out / "report.html").as_uri())
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert report.png_size(base64.b64encode(png[:33]).decode()) == WINDOW
    import matplotlib.image as mpimg

    img = mpimg.imread(shot)
    assert len(np.unique((img[..., :3] * 255).astype(np.uint8).reshape(-1, 3), axis=0)) > 50, "blank screenshot"
