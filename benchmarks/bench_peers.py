"""Side-by-side benchmark: our synthesizer (fast and default presets) against SDV's PARSynthesizer
and MOSTLY AI's open engine (TabularARGN), on the same data, split and number of sequences.

    python benchmarks/bench_peers.py [--datasets nasdaq100 hurricane ...] [--synthesizers ...]

Per dataset: the table is read in place from ../shared/data and typed by our ingest; long series
are cut into non-overlapping 24-step windows, each window an entity (key ``window``), so every
synthesizer sees the same panel. One entity-level 80/20 train/holdout split (seed 0); every
synthesizer gets train only and generates as many sequences as train has. Each synthesizer runs in
its own process (peak RSS is its own); each peer from its own virtual environment under
``benchmarks/.peers/`` that this script creates with a pinned version (never a package dependency).
Every synthetic table is then typed with the same schema and audited by our own ``evaluate``
(discriminative, temporal discriminative, predictive, DCR share, exact copies); the holdout audited
as if it were synthetic gives the floor (what real unseen data scores against train).

Writes ``benchmarks/results/peers.json`` (appending per dataset, so a long run can be resumed) and
the generated table in ``benchmarks/README.md``. Datasets whose target is missed stay in the table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _shared import audit_cells, cell, windowed

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "benchmarks" / "results" / "peers.json"
README = ROOT / "benchmarks" / "README.md"
PEERS_DIR = ROOT / "benchmarks" / ".peers"
WORK = ROOT / "benchmarks" / ".work"
WINDOW = 24
HOLDOUT = 0.2
SEED = 0

DATASETS: dict[str, dict[str, Any]] = {
    "nasdaq100": dict(file="nasdaq100_2019.csv", entity_key="Symbol", time_index="date"),
    "hurricane": dict(file="hurricane.csv", entity_key="region", time_index="date"),
    "pollution": dict(file="pollution_data.csv", entity_key=None, time_index="date"),
    "metro_traffic": dict(file="metro_traffic.csv", entity_key=None, time_index="date"),
    "etth1": dict(file="etth1.csv", entity_key=None, time_index="date"),
    # categorical-heavy (issue 16 item 3): three time-varying categoricals (weather, its 38-level
    # description, cloud cover in coded percent) beside two numerics; short sequences (12 hours), a few
    # hundred entities (every 8th window of the series: ~500, spread over its six years)
    "metro_weather": dict(file="metro_traffic.csv", entity_key=None, time_index="date", window=12, every=8,
                          columns=["date", "weather_main", "weather_description", "clouds_all", "temp",
                                   "traffic_volume"], as_category=["clouds_all"]),
}
# Pinned peer environments: torch 2.13.0 (the machine's CPU wheel) first, so nothing pulls a CUDA
# build; torchvision/torchaudio are removed from the MOSTLY env (PyPI's builds fail to import next
# to this torch and break `transformers`, which the engine imports).
PEERS: dict[str, dict[str, Any]] = {
    "sdv-par": dict(env="sdv", packages=["sdv==1.38.5", "pyarrow"], remove=[], runner="run_par.py"),
    "mostlyai-engine": dict(env="mostly", packages=["mostlyai-engine==2.7.3"], remove=["torchvision", "torchaudio"],
                            runner="run_mostly.py"),
}
OURS = ("ours-fast", "ours-default")
# --smoke: a few minutes in all, to check the harness end to end (numbers meaningless)
SMOKE = {"sdv-par": ["--epochs", "1"], "mostlyai-engine": ["--max_minutes", "0.2"],
         "ours": json.dumps({"vae_steps": 40, "diffusion_steps": 40, "static_steps": 20})}


# ------------------------------------------------------------------------------------------------
# data: one typed panel per dataset, one split, shared by every synthesizer
# ------------------------------------------------------------------------------------------------
def prepare(dataset: str) -> dict[str, Any]:
    """Write ``.work/<dataset>/{train,holdout}.parquet``, ``schema.yaml`` and ``meta.json``."""

    from synth_pipeline.ingest import coerce, read_source
    from synth_pipeline.schema import ColumnKind, infer_schema
    from synth_pipeline.split import split_sequences

    spec = DATASETS[dataset]
    raw = read_source(SHARED / spec["file"])
    key, time_col = spec["entity_key"], spec["time_index"]
    if spec.get("columns"):
        raw = raw[spec["columns"]].copy()
    for col in spec.get("as_category", []):  # coded levels (e.g. cloud cover 0/1/20/40/75/90 %), not a number
        raw[col] = ("c" + raw[col].astype("Int64").astype("string")).astype("category")
    if key is None:  # a long series -> windows (24 steps unless the spec says), each an entity
        key = "window"
        df, schema = windowed(raw, time_col, spec.get("window", WINDOW), dataset, spec.get("every", 1))
    else:
        schema = infer_schema(raw, time_index=time_col, entity_key=key, name=dataset)
        df = coerce(raw, schema)
    train, holdout = split_sequences(df, schema, HOLDOUT, SEED)
    work = WORK / dataset
    work.mkdir(parents=True, exist_ok=True)
    train.to_parquet(work / "train.parquet", index=False)
    holdout.to_parquet(work / "holdout.parquet", index=False)
    schema.to_yaml(work / "schema.yaml")
    modelled = [c for c in schema.columns if c.name not in (key, time_col) and c.kind in
                (ColumnKind.CONTINUOUS, ColumnKind.INTEGER, ColumnKind.CATEGORICAL, ColumnKind.BINARY)]
    meta = {
        "dataset": dataset, "entity_key": key, "time_index": time_col,
        "static": [c.name for c in modelled if c.static],
        "numeric": [c.name for c in modelled if c.kind in (ColumnKind.CONTINUOUS, ColumnKind.INTEGER)],
        "categorical": [c.name for c in modelled if c.kind in (ColumnKind.CATEGORICAL, ColumnKind.BINARY)],
        "n_synthetic": int(train[key].nunique()), "train_rows": len(train), "holdout_rows": len(holdout),
        "holdout_sequences": int(holdout[key].nunique()),
        "sequence_length": int(train.groupby(key).size().max()),
    }
    (work / "meta.json").write_text(json.dumps(meta, indent=2))
    return meta


# ------------------------------------------------------------------------------------------------
# synthesizers (each in its own process)
# ------------------------------------------------------------------------------------------------
def ensure_peer_env(name: str) -> Path:
    """Create ``benchmarks/.peers/<env>`` with the pinned packages once; return its python."""
    p = PEERS[name]
    env = PEERS_DIR / p["env"]
    py = env / "bin" / "python"
    marker = env / ".ready"
    want = json.dumps(p)
    if marker.exists() and marker.read_text() == want:
        return py
    print(f"[bench] creating {env} ({', '.join(p['packages'])}) ...", flush=True)
    shutil.rmtree(env, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(env)], check=True)
    pip = [str(py), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, "torch==2.13.0"], check=True)
    subprocess.run([*pip, *p["packages"]], check=True)
    if p["remove"]:
        subprocess.run([str(py), "-m", "pip", "uninstall", "-y", "-q", *p["remove"]], check=True)
    marker.write_text(want)
    return py


def run_ours(preset: str, work: Path, out: Path, overrides: str | None = None) -> None:
    """Entry point of the ``--run-ours`` subprocess."""
    import resource

    import pandas as pd
    import torch

    from synth_pipeline.config import ModelConfig
    from synth_pipeline.schema import DatasetSchema
    from synth_pipeline.synthesizer import Synthesizer

    meta = json.loads((work / "meta.json").read_text())
    schema = DatasetSchema.from_yaml(work / "schema.yaml")
    train = pd.read_parquet(work / "train.parquet")
    cfg = ModelConfig.from_preset(preset, {"seed": SEED, "progress": False, **json.loads(overrides or "{}")})
    t0 = time.perf_counter()
    syn = Synthesizer(schema, cfg).fit(train)
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    synthetic = syn.sample(meta["n_synthetic"], seed=SEED + 1)
    sample_s = time.perf_counter() - t0
    out.mkdir(parents=True, exist_ok=True)
    synthetic.to_parquet(out / "synthetic.parquet", index=False)
    (out / "result.json").write_text(json.dumps({
        "synthesizer": f"ours-{preset}", "fit_seconds": fit_s, "sample_seconds": sample_s,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "settings": {"preset": preset}, "torch_threads": torch.get_num_threads(),
    }))


def run_synthesizer(name: str, work: Path, timeout_s: int, smoke: bool = False) -> dict[str, Any]:
    out = work / name
    shutil.rmtree(out, ignore_errors=True)
    if name in OURS:
        cmd = [sys.executable, __file__, "--run-ours", name.split("-", 1)[1], "--work", str(work), "--out", str(out)]
        cmd += ["--overrides", SMOKE["ours"]] if smoke else []
    else:
        py = ensure_peer_env(name)
        cmd = [str(py), str(ROOT / "benchmarks" / "peers" / PEERS[name]["runner"]), "--work", str(work), "--out", str(out)]
        cmd += SMOKE[name] if smoke else []
    t0, load0 = time.perf_counter(), os.getloadavg()[0]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, cwd=ROOT / "benchmarks" / "peers")
    except subprocess.TimeoutExpired:
        return {"synthesizer": name, "error": f"timed out after {timeout_s}s"}
    if res.returncode != 0 or not (out / "result.json").exists():
        tail = (res.stderr or res.stdout).strip().splitlines()[-3:]
        return {"synthesizer": name, "error": " | ".join(tail)}
    row = json.loads((out / "result.json").read_text())
    row["wall_seconds"] = time.perf_counter() - t0
    row["load_avg_1m"] = [round(load0, 2), round(os.getloadavg()[0], 2)]  # other work on the machine
    return row


# ------------------------------------------------------------------------------------------------
# one audit for all
# ------------------------------------------------------------------------------------------------
def audit(work: Path, synthetic_path: Path | None) -> dict[str, Any]:
    import pandas as pd

    from synth_pipeline.evaluation import evaluate
    from synth_pipeline.evaluation.gate import GateConfig
    from synth_pipeline.ingest import coerce
    from synth_pipeline.schema import DatasetSchema

    schema = DatasetSchema.from_yaml(work / "schema.yaml")
    train = pd.read_parquet(work / "train.parquet")
    holdout = pd.read_parquet(work / "holdout.parquet")
    dup_times = 0
    if synthetic_path is None:
        synthetic = holdout
    else:
        synthetic, dup_times = in_generation_order(pd.read_parquet(synthetic_path), schema, train)
        synthetic = coerce(synthetic, schema)
    gate = GateConfig(min_sequences=20)
    ev = evaluate(train, holdout, synthetic, schema, gate, seed=SEED)
    fid = {k: m.value for k, m in ev.metrics.items()}
    priv = ev.privacy
    return {
        "discriminative": fid.get("discriminative"), "temporal_discriminative": fid.get("temporal_discriminative"),
        "predictive": fid.get("predictive"), "marginals": fid.get("marginals"), "correlation": fid.get("correlation"),
        "dcr_share": priv["dcr"]["share"], "dcr_ci": [priv["dcr"]["ci_low"], priv["dcr"]["ci_high"]],
        "exact_copies": priv["exact_copies"]["count"], "gate_passed": bool(ev.passed),
        "failed_checks": [c.name for c in ev.gate.failed], "duplicate_times": dup_times,
    }


def in_generation_order(df, schema, train):  # noqa: ANN001, ANN201 - pandas frames
    """Peers may generate repeated timestamps within an entity (the MOSTLY engine did on nasdaq100),
    which no time-ordered audit can order. Every synthesizer generates each entity's rows in
    sequence order, so the audit uses that order: the time column becomes train's first timestamp
    plus the row's position times train's median step. Returns the frame and how many rows had a
    repeated timestamp (reported as a defect)."""
    key, t = schema.entity_key, schema.time_index
    dup = int(df.duplicated([key, t]).sum())
    if dup:
        step = train.groupby(key)[t].diff().median()
        df = df.copy()
        df[t] = train[t].min() + df.groupby(key, sort=False).cumcount() * step
    return df, dup


# ------------------------------------------------------------------------------------------------
# targets and the table
# ------------------------------------------------------------------------------------------------
def targets(rows: dict[str, dict[str, Any]], floor: dict[str, Any]) -> dict[str, Any]:
    """The issue's claims, checked for one dataset: ours-fast and ours-default each."""
    peers = [rows[p] for p in PEERS if p in rows and "error" not in rows[p]]
    out: dict[str, Any] = {}
    for ours in OURS:
        r = rows.get(ours)
        if not r or "error" in r:
            continue
        t: dict[str, Any] = {}
        if peers:
            best_disc = min(p["discriminative"] for p in peers)
            fastest = min(p["fit_seconds"] + p["sample_seconds"] for p in peers)
            t["disc_vs_best_peer"] = r["discriminative"] / best_disc if best_disc > 0 else None
            t["disc_le_third_of_best_peer"] = bool(r["discriminative"] <= best_disc / 3)
            t["time_vs_fastest_peer"] = (r["fit_seconds"] + r["sample_seconds"]) / fastest
            t["time_le_third_of_fastest_peer"] = bool(t["time_vs_fastest_peer"] <= 1 / 3)
        t["disc_minus_floor"] = r["discriminative"] - floor["discriminative"]
        t["disc_within_0.05_of_floor"] = bool(t["disc_minus_floor"] <= 0.05)
        t["dcr_share_within_0.5pm0.05"] = bool(abs(r["dcr_share"] - 0.5) <= 0.05)
        t["no_exact_copies"] = r["exact_copies"] == 0
        t["sequences_per_second"] = r["n_synthetic"] / r["sample_seconds"] if r["sample_seconds"] else None
        out[ours] = t
    return out




def markdown(doc: dict[str, Any]) -> str:
    lines = [
        f"Machine: {doc['machine']['description']}. Run: {doc['machine']['started']}.",
        "",
        "| dataset | synthesizer | discr. ↓ | temporal ↓ | predictive ↓ | DCR share (95% CI) | copies | fit s | sample s | peak RSS MB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for ds, d in doc["datasets"].items():
        if "skipped" in d:
            lines.append(f"| {ds} | skipped: {d['skipped']} |||||||||")
            continue
        fl = d["floor"]
        lines.append(f"| {ds} | *holdout (floor)* | {cell(fl['discriminative'])} | {cell(fl['temporal_discriminative'])} "
                     f"| {cell(fl['predictive'])} | | | | | |")
        for name, r in d["synthesizers"].items():
            if "error" in r:
                lines.append(f"| {ds} | {name} | error: {r['error'][:120]} |||||||||")
                continue
            lines.append(
                f"| {ds} | {name} | {audit_cells(r)} | {r['exact_copies']} | "
                f"{cell(r['fit_seconds'], '{:.0f}')} | {cell(r['sample_seconds'], '{:.1f}')} | {cell(r['peak_rss_mb'], '{:.0f}')} |")
    lines += ["", "Targets (ours vs the peer rows above, same machine, split and audit; see 'Run' for when each was measured):", "",
              "| dataset | preset | discr. / best peer (≤ 0.33) | discr. − floor (≤ 0.05) | time / fastest peer (≤ 0.33) "
              "| DCR share in 0.45–0.55 | no copies | seq/s |", "|---|---|---|---|---|---|---|---|"]
    for ds, d in doc["datasets"].items():
        for ours, t in d.get("targets", {}).items():
            def mark(ok: bool | None) -> str:
                return "" if ok is None else (" ✓" if ok else " ✗")
            lines.append(
                f"| {ds} | {ours} | {cell(t.get('disc_vs_best_peer'), '{:.2f}')}{mark(t.get('disc_le_third_of_best_peer'))} "
                f"| {cell(t['disc_minus_floor'])}{mark(t['disc_within_0.05_of_floor'])} "
                f"| {cell(t.get('time_vs_fastest_peer'), '{:.2f}')}{mark(t.get('time_le_third_of_fastest_peer'))} "
                f"| {mark(t['dcr_share_within_0.5pm0.05'])} | {mark(t['no_exact_copies'])} "
                f"| {cell(t['sequences_per_second'], '{:.0f}')} |")
    return "\n".join(lines)


def write_readme_table(doc: dict[str, Any]) -> None:
    start, end = "<!-- peers:start -->", "<!-- peers:end -->"
    text = README.read_text() if README.exists() else f"# Benchmarks\n\n{start}\n{end}\n"
    if start not in text:
        text += f"\n{start}\n{end}\n"
    head, rest = text.split(start, 1)
    tail = rest.split(end, 1)[1]
    tmp = README.with_suffix(".md.tmp")
    tmp.write_text(f"{head}{start}\n{markdown(doc)}\n{end}{tail}")
    os.replace(tmp, README)


def machine() -> dict[str, Any]:
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor())
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {"description": f"{os.cpu_count()} CPU cores ({cpu}), {mem_gb:.0f} GiB RAM, {platform.system()}, "
                           f"Python {platform.python_version()}, no GPU",
            "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpus": os.cpu_count()}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    ap.add_argument("--synthesizers", nargs="+", default=[*OURS, *PEERS], choices=[*OURS, *PEERS])
    ap.add_argument("--timeout", type=int, default=3600, help="seconds per synthesizer run")
    ap.add_argument("--fresh", action="store_true", help="forget earlier results in peers.json")
    ap.add_argument("--smoke", action="store_true", help="tiny budgets to check the harness; results go to "
                    "peers.smoke.json, not the README")
    ap.add_argument("--run-ours", help=argparse.SUPPRESS)
    ap.add_argument("--overrides", help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.run_ours:
        run_ours(a.run_ours, Path(a.work), Path(a.out), a.overrides)
        return 0
    results = RESULTS.with_suffix(".smoke.json") if a.smoke else RESULTS
    doc = {"machine": machine(), "datasets": {}}
    if results.exists() and not a.fresh:
        doc["datasets"] = json.loads(results.read_text()).get("datasets", {})
    for ds in a.datasets:
        src = SHARED / DATASETS[ds]["file"]
        if not src.exists():
            print(f"[bench] skip {ds}: {src} not found (the shared data folder is not beside the project)")
            doc["datasets"][ds] = {"skipped": f"{src} not found"}
            continue
        meta = prepare(ds)
        work = WORK / ds
        print(f"[bench] {ds}: {meta['n_synthetic']} train / {meta['holdout_sequences']} holdout sequences x "
              f"{meta['sequence_length']} steps", flush=True)
        entry = doc["datasets"].get(ds, {}) if not a.fresh else {}
        entry.update({"meta": meta, "floor": audit(work, None)})
        rows = entry.setdefault("synthesizers", {})
        for name in a.synthesizers:
            r = run_synthesizer(name, work, a.timeout, a.smoke)
            if "error" not in r:
                r.update(audit(work, work / name / "synthetic.parquet"))
                r["n_synthetic"] = meta["n_synthetic"]
            rows[name] = r
            print(f"[bench] {ds} {name}: " + (r["error"] if "error" in r else
                  f"discr {r['discriminative']:.3f} temporal {r['temporal_discriminative']:.3f} predictive "
                  f"{r['predictive']:.3f} DCR {r['dcr_share']:.3f} copies {r['exact_copies']} fit {r['fit_seconds']:.0f}s "
                  f"sample {r['sample_seconds']:.1f}s RSS {r['peak_rss_mb']:.0f} MB"), flush=True)
        entry["targets"] = targets(rows, entry["floor"])
        doc["datasets"][ds] = entry
        results.parent.mkdir(parents=True, exist_ok=True)
        tmp = results.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc, indent=2, default=str))
        os.replace(tmp, results)
        if not a.smoke:
            write_readme_table(doc)
    print(markdown(doc))
    print(f"wrote {results}" + ("" if a.smoke else f" and the table in {README}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
