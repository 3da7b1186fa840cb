"""Benchmark of the evaluation's two heavy parts (a script, not a timed test).

1. Memorization audit (``privacy.dcr_audit``): every one of N synthetic sequences against an
   N-sequence train sample and an N-sequence holdout (N = 100,000 by default), length 24, 20 step
   features (14 numerics, 2 missing flags, a 4-level categorical) + a 3-level static categorical:
   the shared representation's 483-dimensional distance vectors. Two N x N nearest-neighbour
   passes (top-2, for the NNDR), i.e. 2 x 10^10 distances, by the projected search with exact
   re-ranking (``privacy.distances.search``; its certification / agreement numbers are recorded).
   Targets: <= 120 s, <= 2 GB extra RSS. ``--compare-n`` runs a smaller audit both by brute force
   and projected, to show the speed-up and whether the distances are identical.
2. Discriminative score (``fidelity.DiscriminativeScore``) on 10,000 real + 10,000 synthetic
   sequences with the default settings (3 seeds, 80/20). Target: <= 60 s.

The data are drawn from a latent AR(1) factor model (persistent, correlated, noisy like encoded
real series), because timing depends on shapes, not values. Prints the numbers and writes
benchmarks/results/audit.json. ``--n`` makes a smaller run.
"""

from __future__ import annotations

import argparse
import os
import platform
import threading
import time
from pathlib import Path

import numpy as np
import torch

from synth_pipeline.evaluation.fidelity import DiscriminativeScore, MetricContext
from synth_pipeline.evaluation.privacy import dcr_audit
from synth_pipeline.evaluation.representation import EncodedSet
from synth_pipeline.io_utils import atomic_write_json

T, N_NUM, N_MISS, N_CAT, N_STATIC = 24, 14, 2, 4, 3
RESULTS = Path(__file__).resolve().parent / "results" / "audit.json"


def make_set(n: int, seed: int, loadings: np.ndarray) -> EncodedSet:
    rng = np.random.default_rng(seed)
    k = loadings.shape[0]
    z = np.empty((n, T, k), np.float32)
    z[:, 0] = rng.standard_normal((n, k))
    for t in range(1, T):
        z[:, t] = 0.9 * z[:, t - 1] + 0.436 * rng.standard_normal((n, k))
    num = (z @ loadings + 0.5 * rng.standard_normal((n, T, N_NUM))).astype(np.float32)
    miss = (rng.random((n, 1, N_MISS)) < 0.1) & (rng.random((n, T, N_MISS)) < 0.5)
    num[..., :N_MISS] = np.where(miss, 0.0, num[..., :N_MISS])
    cat = np.eye(N_CAT, dtype=np.float32)[np.clip((z[..., 0] + 2).astype(int), 0, N_CAT - 1)]
    static = np.eye(N_STATIC, dtype=np.float32)[rng.integers(0, N_STATIC, n)]
    dyn = np.concatenate([num, miss.astype(np.float32), cat], 2)
    present = np.ones((n, T), bool)
    return EncodedSet(
        name=f"set{seed}", dyn=dyn, static=static, present=present, lengths=np.full(n, T, np.int64),
        num_observed=np.broadcast_to(~miss[..., :1], (n, T, N_NUM)), row_hash=np.zeros((n, T), np.uint64),
        seq_hash=np.zeros(n, np.uint64), static_varies=np.zeros(n, bool), units=np.arange(n),
    )


def rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRSS:
    """Samples the resident set size every 20 ms while the block runs."""

    def __enter__(self) -> PeakRSS:
        self.base = self.peak = rss_bytes()
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, rss_bytes())

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, rss_bytes())

    @property
    def extra_mb(self) -> float:
        return (self.peak - self.base) / 2**20


def gemm_probe() -> float:
    a, b = torch.randn(1024, 483), torch.randn(483, 8192)
    a @ b
    t = time.perf_counter()
    for _ in range(3):
        a @ b
    return 3 * 2 * 1024 * 483 * 8192 / (time.perf_counter() - t) / 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000, help="synthetic = train sample = holdout sequences")
    ap.add_argument("--disc-n", type=int, default=10_000, help="sequences per class for the discriminative score")
    ap.add_argument("--compare-n", type=int, default=20_000,
                    help="also run the audit at this size both exactly and projected, to compare")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()

    machine = {
        "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
        "torch": torch.__version__, "load_avg_at_start": [round(x, 2) for x in os.getloadavg()],
        "gemm_gflops_probe": round(gemm_probe(), 1),
    }
    print(f"machine: {machine}")
    loadings = np.random.default_rng(123).normal(0, 0.6, (4, N_NUM)).astype(np.float32)
    t = time.perf_counter()
    syn, train, hold = (make_set(args.n, s, loadings) for s in (1, 2, 3))
    flat = [s.flat() for s in (syn, train, hold)]
    print(f"data: 3 x {args.n} sequences x {flat[0].shape[1]} dims generated in {time.perf_counter() - t:.1f}s")

    marks: dict[str, float] = {}

    def progress(msg: str) -> None:
        if msg.endswith("(100%)"):
            marks[msg.split(":")[0]] = time.perf_counter()
            print(f"  {msg}", flush=True)

    with PeakRSS() as mem:
        t0 = time.perf_counter()
        res = dcr_audit(flat[0], flat[1], flat[2], progress=progress)
        dcr_s = time.perf_counter() - t0
    passes = sorted(marks.values())
    first_pass = passes[0] - t0 if passes else dcr_s
    dcr = {
        "n_synthetic": args.n, "n_train_sample": args.n, "n_holdout": args.n, "dims": int(flat[0].shape[1]),
        "distances": 2 * args.n * args.n, "seconds_total": round(dcr_s, 1),
        "seconds_pass_train_sample": round(first_pass, 1),
        "seconds_pass_holdout": round(dcr_s - first_pass, 1),
        "effective_gflops": round(2 * 2 * args.n * args.n * flat[0].shape[1] / dcr_s / 1e9, 1),
        "peak_extra_rss_mb": round(mem.extra_mb, 1), "input_arrays_mb": round(sum(f.nbytes for f in flat) / 2**20, 1),
        "share": round(res.share, 4), "ci": [round(res.ci_low, 4), round(res.ci_high, 4)],
        "search": res.search, "target_seconds": 120, "target_extra_rss_mb": 2048,
    }
    print(f"DCR audit: {dcr}")
    del flat, train, hold

    compare = {}
    if args.compare_n:  # the same audit, brute force vs projected search, on a size both can do
        sets = [make_set(args.compare_n, s, loadings).flat() for s in (6, 7, 8)]
        for mode, kw in (("exact", {"exact_work": float("inf")}), ("projected", {"exact_work": 0})):
            t0 = time.perf_counter()
            r = dcr_audit(*sets, **kw)
            d_tr = r.d_train
            compare[mode] = {"seconds": round(time.perf_counter() - t0, 1), "share": round(r.share, 4),
                             "search": r.search, "d_train": d_tr, "d_holdout": r.d_holdout}
        same = {k: bool(np.array_equal(compare["exact"][k], compare["projected"][k])) for k in ("d_train", "d_holdout")}
        for mode in compare:
            compare[mode].pop("d_train"), compare[mode].pop("d_holdout")
        compare.update(n=args.compare_n, identical_distances=same,
                       speedup=round(compare["exact"]["seconds"] / max(compare["projected"]["seconds"], 1e-9), 2))
        print(f"exact vs projected at {args.compare_n}: {compare}")

    real = make_set(args.disc_n, 4, loadings)
    fake = make_set(args.disc_n, 5, loadings * 0.8)
    metric = DiscriminativeScore()
    with PeakRSS() as mem2:
        t0 = time.perf_counter()
        r = metric.compute(real, fake, MetricContext(rep=None))
        disc_s = time.perf_counter() - t0
    disc = {
        "n_per_class": r.details["n_per_class"], "seeds": 3, "train_steps": r.details["train_steps"],
        "seconds": round(disc_s, 1), "score": round(r.value, 4), "accuracy_per_seed": r.details["accuracy_per_seed"],
        "peak_extra_rss_mb": round(mem2.extra_mb, 1), "target_seconds": 60,
    }
    print(f"discriminative score: {disc}")
    machine["load_avg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    atomic_write_json(args.out, {"machine": machine, "dcr_audit": dcr, "dcr_exact_vs_projected": compare,
                                 "discriminative": disc})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
