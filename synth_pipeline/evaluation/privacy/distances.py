"""Exact k-nearest-neighbour distances between two sets of vectors, in bounded memory.

``nearest(queries, refs, k)`` streams blocks of queries against blocks of references:
``|q - r|^2 = |q|^2 + |r|^2 - 2 q.r`` with one GEMM per block pair (torch, float32), a running
top-k per query, then the k winners' distances recomputed exactly in float64 from the vectors
(so an exact copy has distance 0.0, not a rounding residue, and ties are real ties). Peak extra
memory is one reused block of distances (``block_q x block_r`` floats, 32 MiB by default) plus the
running top-k; it does not grow with the number of references.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

BLOCK_Q = 2048
BLOCK_R = 4096


def nearest(
    queries: np.ndarray,
    refs: np.ndarray,
    k: int = 2,
    *,
    block_q: int = BLOCK_Q,
    block_r: int = BLOCK_R,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Distances [Nq, k] (float64, ascending) and indices [Nq, k] of each query's k nearest refs.

    Columns beyond the number of references are +inf / -1. ``progress(done, total)`` is called
    after every query block.
    """
    q = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32))
    r = torch.from_numpy(np.ascontiguousarray(refs, dtype=np.float32))
    nq, nr = q.shape[0], r.shape[0]
    dist = np.full((nq, k), np.inf)
    index = np.full((nq, k), -1, dtype=np.int64)
    if nq == 0 or nr == 0:
        return dist, index
    kk = min(k, nr)
    r_norm = (r * r).sum(1)
    buf = torch.empty(min(block_q, nq), min(block_r, nr))  # reused: no fresh pages per block
    with torch.no_grad():
        for i in range(0, nq, block_q):
            qb = q[i : i + block_q]
            best_v = torch.full((qb.shape[0], kk), float("inf"))
            best_i = torch.full((qb.shape[0], kk), -1, dtype=torch.int64)
            for j in range(0, nr, block_r):
                rb = r[j : j + block_r]
                # |r|^2 - 2 q.r  (|q|^2 is constant per row and does not change the ranking)
                d = torch.addmm(
                    r_norm[j : j + block_r].unsqueeze(0), qb, rb.T, beta=1.0, alpha=-2.0,
                    out=buf[: qb.shape[0], : rb.shape[0]],
                )
                v, ix = torch.topk(d, min(kk, d.shape[1]), dim=1, largest=False, sorted=False)
                v = torch.cat([best_v, v], 1)
                ix = torch.cat([best_i, ix + j], 1)
                best_v, pos = torch.topk(v, kk, dim=1, largest=False, sorted=False)
                best_i = torch.gather(ix, 1, pos)
            bi = best_i.numpy()
            qd = queries[i : i + block_q].astype(np.float64)
            exact = np.sqrt(((qd[:, None, :] - refs[bi].astype(np.float64)) ** 2).sum(-1))
            order = np.argsort(exact, axis=1, kind="stable")
            dist[i : i + block_q, :kk] = np.take_along_axis(exact, order, 1)
            index[i : i + block_q, :kk] = np.take_along_axis(bi, order, 1)
            if progress is not None:
                progress(min(i + block_q, nq), nq)
    return dist, index
