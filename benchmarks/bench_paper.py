"""Paper protocol (issue 16 item 4): the TimeGAN / Diffusion-TS evaluation of 24-step generation.

Protocol, as in the reference code read for this script (Y-debug-sys/Diffusion-TS at 4f1e2fd:
``Utils/discriminative_metric.py``, ``Utils/predictive_metric.py``, ``Utils/metric_utils.py``,
``Utils/Data_utils/real_datasets.py``; jsyoon0823/TimeGAN: ``metrics/discriminative_metrics.py``,
``metrics/predictive_metrics.py``, ``main_timegan.py``):

- data: the long series without its date column, min-max scaled per column over the whole series
  (``(x - min) / (max - min + 1e-7)``, TimeGAN's ``MinMaxScaler``; Diffusion-TS uses sklearn's), cut
  into 24-step windows with stride 1 (Diffusion-TS: ``len - 24 + 1`` windows; TimeGAN's loop drops the
  last one and also reverses the rows, ``ori_data[::-1]``; we keep the file's chronological order).
  All windows are the training set; as many synthetic windows are generated (``fake[:len(ori)]``).
- discriminative score: a post-hoc **one-layer** GRU (``GRUCell(hidden_dim=int(dim/2))``, tanh) whose
  last state goes through a dense layer to one logit; loss = mean sigmoid cross-entropy on real (label 1)
  + mean on synthetic (label 0); Adam (TF defaults: lr 1e-3); 2,000 iterations, each one batch of 128
  real and one of 128 synthetic windows drawn without replacement from the train parts; 80/20 random
  train/test split of the real and (separately) of the synthetic windows; score = |accuracy - 0.5| on
  the test real + test synthetic windows at threshold 0.5. The issue says "post-hoc 2-layer GRU": the
  reference has one GRU layer (+ the dense output), and so do we.
- predictive score ("train on synthetic, test on real"): a one-layer GRU (``hidden_dim=int(dim/2)``)
  reads the first ``dim - 1`` features of steps 0..22 and predicts the last feature at steps 1..23
  (dense + sigmoid on every output step); L1 loss, Adam lr 1e-3, 5,000 iterations of 128 synthetic
  windows; score = mean absolute error over all real windows and steps.

Deviations: torch instead of TensorFlow (``nn.GRU``'s default initialisation, not TF's Glorot kernels
with gate bias 1; TF's GRU applies the reset gate before the recurrent matmul, torch after), seeded
torch / numpy generators, one thread. "5 runs" here are 5 independent fit + sample + score runs (seeds
0..4), reported as mean ± sample std; the papers fit once and repeat the *metric* 5 times (TimeGAN 10)
on one synthetic set, and Diffusion-TS's "±" is ``display_scores``' 95 % t-interval half-width
(sem x t_{0.975, 4} = 2.776 sem), which we also record. Our synthesizer is trained on the raw values
(it has its own encoding, including its privacy protections: tails clipped at the 5th-7th most extreme
entity, i.e. window); its output is scaled with the real series' min/max before scoring.

    python benchmarks/bench_paper.py [--datasets stocks etth1] [--presets fast default budget30]
                                     [--runs 5] [--smoke]

Each (dataset, preset, run) runs in its own process (torch at 1 thread); rows are appended to
``benchmarks/results/paper.json`` (``--smoke``: ``benchmarks/.work/paper.smoke.json``) with the machine, fit / sample / metric seconds and load averages.
``--table`` rewrites the "Paper protocol" section of ``benchmarks/README.md`` from the JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

from _shared import append_run, run_child, stage_steps

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "benchmarks" / "results" / "paper.json"
SMOKE_RESULTS = ROOT / "benchmarks" / ".work" / "paper.smoke.json"  # --smoke rows (harness checks only)
README = ROOT / "benchmarks" / "README.md"
SEQ_LEN = 24
DATASETS = {"stocks": "stock_data.csv", "etth1": "etth1.csv"}
# arm -> (preset, overrides). budget30: the default preset (hidden 128, 2-layer denoiser, 20 sampling
# steps) plus the fast preset's L2D refiner, with a fixed 5,000 VAE + 8,000 prior + 8,000 refiner steps
# (2x the default's VAE cap, 1.6x its prior cap): measured on stocks windows at one thread, load ~2,
# each of these steps costs ~0.085 s (300-step fits: 28.2, 28.3, 31.0 s, 2.7 s of it encoding), so
# 21,000 steps ~ 30 minutes. budget=fixed so the count does not depend on the data size.
ARMS: dict[str, tuple[str, dict[str, Any]]] = {
    "fast": ("fast", {}),
    "default": ("default", {}),
    "budget30": ("default", {"budget": "fixed", "refine": "auto", "vae_steps": 5000, "diffusion_steps": 8000,
                             "refine_steps": 8000}),
    # reference point, no synthesizer: the real windows scored against themselves (shuffled); its predictive
    # score is the papers' "Original" row (train on real, test on real)
    "real": ("none", {}),
}
SMOKE = {"vae_steps": 20, "diffusion_steps": 20, "refine_steps": 20, "static_steps": 10, "min_steps": 5,
         "epochs": 1.0, "sampling_steps": 2}
# metric networks (reference values; --smoke shortens the iterations)
DISC_ITERS, PRED_ITERS, BATCH = 2000, 5000, 128
# published 24-step scores (mean ± the paper's 95 % interval over 5 metric repeats on one synthetic set), read
# from Diffusion-TS's Table 1 as reproduced in later papers (the repository's README shows it as an image)
PUBLISHED = [
    ("Diffusion-TS (ICLR 2024), Table 1", "stocks", "0.067 ± 0.015", "0.036 ± 0.000"),
    ("Diffusion-TS (ICLR 2024), Table 1", "etth1", "0.061 ± 0.009", "0.119 ± 0.002"),
    ("TimeGAN (NeurIPS 2019), in Diffusion-TS Table 1", "stocks", "0.102 ± 0.021", "0.038 ± 0.001"),
    ("TimeGAN (NeurIPS 2019), in Diffusion-TS Table 1", "etth1", "0.114 ± 0.055", "0.124 ± 0.001"),
    ("ImagenTime (NeurIPS 2024)", "stocks", "0.037 ± 0.006", "0.036 ± 0.000"),
    ("TimeAutoDiff paper (its own protocol, not this one)", "Pollution / ETTh1 / Metro", "0.014 / 0.011 / 0.052", "—"),
]


def machine() -> str:
    import os

    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{os.cpu_count()} CPU cores ({cpu}), {mem:.0f} GiB RAM, {platform.system()}, "
            f"Python {platform.python_version()}, torch {torch.__version__}, no GPU")


def code_state() -> dict[str, Any]:
    """HEAD and the uncommitted edits under synth_pipeline/ (others edit the tree while runs go on)."""
    import hashlib
    import subprocess

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], capture_output=True, text=True, cwd=ROOT).stdout

    diff = git("diff", "HEAD", "--", "synth_pipeline")
    return {"head": git("rev-parse", "--short", "HEAD").strip(),
            "dirty_files": git("diff", "HEAD", "--name-only", "--", "synth_pipeline").split(),
            "diff_sha1": hashlib.sha1(diff.encode()).hexdigest()[:12] if diff else None}


# ------------------------------------------------------------------------------------------------
# data


def load_series(dataset: str) -> tuple[Any, str, list[str]]:
    """The raw series (pandas, chronological), its time column and its numeric columns."""
    import pandas as pd

    raw = pd.read_csv(SHARED / DATASETS[dataset])
    time_col = raw.columns[0]
    raw[time_col] = pd.to_datetime(raw[time_col], format="mixed")
    raw = raw.sort_values(time_col, kind="stable").reset_index(drop=True)
    cols = [c for c in raw.columns if c != time_col]
    return raw, time_col, cols


def minmax(values: Any) -> tuple[Any, Any]:
    """TimeGAN's MinMaxScaler: per-column min and scale (max - min + 1e-7) over the whole series."""
    lo = values.min(0)
    return lo, values.max(0) - lo + 1e-7


def windows(values: Any) -> Any:
    """(len - 24 + 1, 24, dim) stride-1 windows of a (len, dim) array (a copy, float32)."""
    import numpy as np

    return np.lib.stride_tricks.sliding_window_view(values, SEQ_LEN, axis=0).transpose(0, 2, 1).astype(np.float32)


def panel(raw: Any, time_col: str, cols: list[str], name: str) -> tuple[Any, Any]:
    """Every stride-1 window as an entity keyed ``window`` (its rows keep their timestamps)."""
    import numpy as np
    import pandas as pd

    from synth_pipeline.ingest import coerce
    from synth_pipeline.schema import infer_schema

    n = len(raw) - SEQ_LEN + 1
    rows = (np.arange(n)[:, None] + np.arange(SEQ_LEN)[None, :]).ravel()
    df = raw.iloc[rows].reset_index(drop=True)
    df.insert(0, "window", pd.Series(np.char.add("w", np.repeat(np.arange(n), SEQ_LEN).astype(str))))
    schema = infer_schema(df, time_index=time_col, entity_key="window", name=name)
    return coerce(df, schema), schema


def synthetic_windows(synthetic: Any, schema: Any, cols: list[str]) -> tuple[Any, int]:
    """(n, 24, dim) array of the synthetic sequences that have 24 steps, and how many had another length."""
    import numpy as np

    key, tcol = schema.entity_key, schema.time_index
    df = synthetic.sort_values([key, tcol], kind="stable")
    sizes = df.groupby(key, sort=False)[key].transform("size").to_numpy()
    full = df[sizes == SEQ_LEN]
    x = full[cols].to_numpy(dtype=np.float64).reshape(-1, SEQ_LEN, len(cols))
    return x, int(df[key].nunique() - len(x))


# ------------------------------------------------------------------------------------------------
# metrics (torch, one thread)


def _gru_head(d_in: int, hidden: int):  # noqa: ANN202 - (nn.GRU, nn.Linear)
    from torch import nn

    return nn.GRU(d_in, hidden, num_layers=1, batch_first=True), nn.Linear(hidden, 1)


def _batch(n: int, g: Any) -> Any:
    import torch

    return torch.randperm(n, generator=g)[:BATCH]


def discriminative_score(real: Any, fake: Any, seed: int, iterations: int = DISC_ITERS) -> dict[str, float]:
    """TimeGAN's post-hoc discriminative score, |accuracy - 0.5| on a 20 % test split (module docstring)."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    dim = real.shape[2]
    gru, head = _gru_head(dim, max(1, dim // 2))
    opt = torch.optim.Adam([*gru.parameters(), *head.parameters()], lr=1e-3, eps=1e-8)
    xr, xf = torch.as_tensor(real, dtype=torch.float32), torch.as_tensor(fake, dtype=torch.float32)
    ir, jf = rng.permutation(len(xr)), rng.permutation(len(xf))
    nr, nf = int(len(xr) * 0.8), int(len(xf) * 0.8)
    tr_r, te_r, tr_f, te_f = xr[ir[:nr]], xr[ir[nr:]], xf[jf[:nf]], xf[jf[nf:]]

    def logit(x: Any) -> Any:
        return head(gru(x)[1][-1]).squeeze(-1)

    for _ in range(iterations):
        lr_, lf = logit(tr_r[_batch(nr, g)]), logit(tr_f[_batch(nf, g)])
        loss = (F.binary_cross_entropy_with_logits(lr_, torch.ones_like(lr_))
                + F.binary_cross_entropy_with_logits(lf, torch.zeros_like(lf)))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    with torch.no_grad():
        pr, pf = torch.sigmoid(logit(te_r)) > 0.5, torch.sigmoid(logit(te_f)) > 0.5
    acc = (pr.sum() + (~pf).sum()).item() / (len(pr) + len(pf))
    return {"discriminative": abs(acc - 0.5), "disc_real_acc": pr.float().mean().item(),
            "disc_fake_acc": (~pf).float().mean().item()}


def predictive_score(real: Any, fake: Any, seed: int, iterations: int = PRED_ITERS) -> float:
    """TimeGAN's train-on-synthetic, test-on-real one-step-ahead MAE of the last feature (module docstring)."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    dim = real.shape[2]
    gru, head = _gru_head(dim - 1, max(1, dim // 2))
    opt = torch.optim.Adam([*gru.parameters(), *head.parameters()], lr=1e-3, eps=1e-8)
    xf = torch.as_tensor(fake, dtype=torch.float32)
    xr = torch.as_tensor(real, dtype=torch.float32)

    def predict(x: Any) -> Any:
        return torch.sigmoid(head(gru(x[:, :-1, : dim - 1])[0]))

    for _ in range(iterations):
        x = xf[_batch(len(xf), g)]
        loss = F.l1_loss(predict(x), x[:, 1:, dim - 1 :])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    with torch.no_grad():
        return F.l1_loss(predict(xr), xr[:, 1:, dim - 1 :]).item()


# ------------------------------------------------------------------------------------------------
# one run (child process)


def run_one(dataset: str, arm: str, run: int, smoke: bool) -> dict[str, Any]:
    import numpy as np
    import torch

    from synth_pipeline.config import ModelConfig
    from synth_pipeline.synthesizer import Synthesizer

    torch.set_num_threads(1)
    code = code_state()
    raw, time_col, cols = load_series(dataset)
    train, schema = panel(raw, time_col, cols, dataset)
    values = raw[cols].to_numpy(dtype=np.float64)
    lo, scale = minmax(values)
    real = windows((values - lo) / scale)
    preset, overrides = ARMS[arm]
    if arm == "real":
        fake, other_len, fit_s, sample_s, steps = real[np.random.default_rng(run).permutation(len(real))], 0, 0.0, 0.0, {}
    else:
        over = {"seed": run, "progress": False, "threads": 1, **overrides, **(SMOKE if smoke else {})}
        cfg = ModelConfig.from_preset(preset, over)
        t0 = time.perf_counter()
        syn = Synthesizer(schema, cfg).fit(train)
        fit_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        synthetic = syn.sample(len(real), seed=run + 1)
        sample_s = time.perf_counter() - t0
        fake_raw, other_len = synthetic_windows(synthetic, schema, cols)
        fake = ((fake_raw - lo) / scale).astype(np.float32)
        steps = stage_steps(syn.model.history)
        if not smoke:  # the scored synthetic windows, for re-scoring (e.g. the papers' 5 metric repeats)
            out = ROOT / "benchmarks" / ".work" / "paper"
            out.mkdir(parents=True, exist_ok=True)
            np.save(out / f"{dataset}_{arm}_run{run}.npy", fake)
    t0 = time.perf_counter()
    scale_it = 0.01 if smoke else 1.0
    disc = discriminative_score(real, fake, seed=run, iterations=max(2, int(DISC_ITERS * scale_it)))
    disc_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    pred = predictive_score(real, fake, seed=run, iterations=max(2, int(PRED_ITERS * scale_it)))
    pred_s = time.perf_counter() - t0
    from synth_pipeline.config import PRESETS

    return {"dataset": dataset, "arm": arm, "preset": preset, "run": run, "smoke": smoke, "machine": machine(),
            "code": code, "preset_values": PRESETS.get(preset),
            "windows": len(real), "synthetic_windows": len(fake), "synthetic_other_length": other_len,
            "columns": cols, "fit_seconds": round(fit_s, 1), "sample_seconds": round(sample_s, 1),
            "discriminative_seconds": round(disc_s, 1), "predictive_seconds": round(pred_s, 1),
            "steps": steps, **disc, "predictive": pred,
            "fake_out_of_range": float(((fake < 0) | (fake > 1)).mean())}


# ------------------------------------------------------------------------------------------------
# README table


def summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    import numpy as np
    from scipy import stats

    # a cell = dataset, arm and the steps the stages trained (a preset that changed between runs is two cells)
    cells: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in rows:
        if not r.get("smoke"):
            cells.setdefault((r["dataset"], r["arm"], json.dumps(r["steps"], sort_keys=True)), []).append(r)
    out = []
    for (ds, arm, steps), rs in cells.items():
        by_run = {r["run"]: r for r in rs}  # a rerun of the same seed replaces the earlier row
        rs = [by_run[k] for k in sorted(by_run)]
        line: dict[str, Any] = {"dataset": ds, "arm": arm, "runs": len(rs), "steps": json.loads(steps)}
        for m in ("discriminative", "predictive", "fit_seconds", "sample_seconds"):
            v = np.array([r[m] for r in rs], dtype=float)
            line[m] = (v.mean(), v.std(ddof=1) if len(v) > 1 else float("nan"),
                       stats.sem(v) * stats.t.ppf(0.975, len(v) - 1) if len(v) > 1 else float("nan"))
        line["per_run"] = [r["discriminative"] for r in rs]
        line["metric_seconds"] = float(np.mean([r["discriminative_seconds"] + r["predictive_seconds"] for r in rs]))
        line["load"] = (min(r["load_avg_1m"][0] for r in rs), max(r["load_avg_1m"][1] for r in rs))
        line["when"] = (rs[0]["when"], rs[-1]["when"])
        out.append(line)
    return out


def table(planned: int = 5) -> str:
    doc = json.loads(RESULTS.read_text()) if RESULTS.exists() else {"runs": []}
    lines = ["| dataset | arm (preset + overrides) | runs | discriminative ↓ mean ± std (95 % CI) | per run | "
             "predictive ↓ mean ± std (95 % CI) | fit s | sample s | metrics s |", "|---|---|---|---|---|---|---|---|---|"]

    def pm(t: tuple[float, float, float]) -> str:
        m, s, ci = t
        return f"{m:.3f}" if s != s else f"{m:.3f} ± {s:.3f} ({ci:.3f})"

    cells = summary(doc["runs"])
    for ds in DATASETS:
        for line in sorted((c for c in cells if c["dataset"] == ds), key=lambda x: list(ARMS).index(x["arm"])):
            preset, over = ARMS[line["arm"]]
            st = line["steps"]
            trained = ", ".join(f"{k} {st[k]}" for k in ("vae", "diffusion", "refine") if k in st)
            arm = {"real": "*real windows vs themselves (floor; predictive = the papers' \"Original\")*"}.get(
                line["arm"], line["arm"] + (f" (`{preset}` + `{json.dumps(over)}`)" if over else "")
                + f"; steps: {trained}")
            of = 1 if line["arm"] in ("budget30", "real") else planned
            per = ", ".join(f"{v:.3f}" for v in line["per_run"])
            fit = f"{line['fit_seconds'][0]:.0f}" if line["arm"] != "real" else ""
            smp = f"{line['sample_seconds'][0]:.0f}" if line["arm"] != "real" else ""
            lines.append(f"| {ds} | {arm} | {line['runs']} of {of} | {pm(line['discriminative'])} | {per} | "
                         f"{pm(line['predictive'])} | {fit} | {smp} | {line['metric_seconds']:.0f} |")
        for who, pds, disc, pred in PUBLISHED:
            if pds == ds:
                lines.append(f"| {ds} | *{who}* | | {disc} | | {pred} | | | |")
    for who, pds, disc, pred in PUBLISHED:
        if pds not in DATASETS:
            lines.append(f"| {pds} | *{who}* | | {disc} | | {pred} | | | |")
    skipped = doc.get("skipped", {})
    if skipped:
        lines.append("")
        lines.extend(f"Skipped: {k}: {v}" for k, v in skipped.items())
    return "\n".join(lines)


def write_table() -> None:
    text = README.read_text()
    start, end = "<!-- paper:start -->", "<!-- paper:end -->"
    if start not in text:
        raise SystemExit(f"{README} has no {start} marker")
    head, rest = text.split(start, 1)
    tail = rest.split(end, 1)[1]
    README.write_text(f"{head}{start}\n{table()}\n{end}{tail}")


# ------------------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    ap.add_argument("--presets", nargs="+", default=["fast", "default"], choices=list(ARMS),
                    help="arms: fast, default, budget30 (default preset + overrides, ~30 min fit)")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--first-run", type=int, default=0, help="seed of the first run (to resume)")
    ap.add_argument("--smoke", action="store_true", help="tiny step counts: checks the harness only")
    ap.add_argument("--stop-at", default=None, help="UTC HH:MM after which no new run is launched")
    ap.add_argument("--table", action="store_true", help="only rewrite the README section from the JSON")
    ap.add_argument("--one", nargs=3, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one:
        print(json.dumps(run_one(a.one[0], a.one[1], int(a.one[2]), a.smoke)))
        return 0
    if a.table:
        write_table()
        return 0
    for ds in a.datasets:
        if not (SHARED / DATASETS[ds]).exists():
            reason = f"{SHARED / DATASETS[ds]} absent"
            print(f"{ds}: skipped ({reason})", flush=True)
            doc = json.loads(RESULTS.read_text()) if RESULTS.exists() else {"runs": []}
            doc.setdefault("skipped", {})[ds] = reason
            RESULTS.parent.mkdir(parents=True, exist_ok=True)
            RESULTS.write_text(json.dumps(doc, indent=2))
            continue
        for arm in a.presets:
            for run in range(a.first_run, a.first_run + a.runs):
                if a.stop_at and time.strftime("%H:%M", time.gmtime()) >= a.stop_at:
                    print(f"{ds} {arm} run {run}: not launched (past {a.stop_at} UTC)", flush=True)
                    continue
                args = ["--one", ds, arm, str(run)] + (["--smoke"] if a.smoke else [])
                row = run_child(__file__, args, f"{ds} {arm} run {run}", arm, json.dumps(ARMS[arm][1]))
                if row is None:
                    continue
                append_run(SMOKE_RESULTS if a.smoke else RESULTS, row)
                print(json.dumps({k: row[k] for k in ("dataset", "arm", "run", "discriminative", "predictive",
                                                      "fit_seconds", "sample_seconds")}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
