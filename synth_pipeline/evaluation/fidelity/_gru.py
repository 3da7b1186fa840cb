"""Small GRU networks for the post-hoc scores, trained as an ensemble of seeds in lock-step (NumPy).

Why NumPy and not ``torch.nn.GRU``: the post-hoc nets are tiny (hidden 16, a few thousand
parameters), so a training step is hundreds of very small matrix products. In PyTorch each of
those enters an OpenMP parallel region of the intra-op pool; on a shared 2-core machine a region
costs milliseconds of scheduling latency (measured: a 64x16 @ 16x48 product took 16 ms with 2
threads on a loaded machine, 6 us in NumPy), which made one training step take 2 s. We neither
change ``torch.set_num_threads`` (process-global state the synthesizer relies on) nor want a
metric whose run time depends on the machine's load, so the GRU is written out here: forward,
back-propagation through time and Adam, vectorized over (seed, batch) and never over rows. Every
matrix product is kept below OpenBLAS' multi-threading threshold, so it runs on the calling
thread. The equations are PyTorch's ``nn.GRU`` (gates r, z, n; ``h' = (1 - z) * n + z * h``);
``tests/test_evaluation_units.py`` checks the gradients against torch autograd.

Shapes: S ensemble members (one per seed), T steps, B sequences per member, I inputs, H hidden.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# OpenBLAS runs a GEMM on one thread when m*n*k <= 65536 * 4; stay below it (see module doc).
_SINGLE_THREAD_MNK = 250_000


def _mm(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Batched ``a @ b`` ([S, M, K] @ [S, K, N]) split along M so that every GEMM stays single-threaded."""
    m, k = a.shape[-2], a.shape[-1]
    n = b.shape[-1]
    rows = max(1, _SINGLE_THREAD_MNK // max(1, k * n))
    if m <= rows:
        return a @ b
    out = np.empty(a.shape[:-1] + (n,), dtype=np.result_type(a, b))
    for i in range(0, m, rows):
        out[..., i : i + rows, :] = a[..., i : i + rows, :] @ b
    return out


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (np.tanh(0.5 * x) + 1.0)


@dataclass
class _Adam:
    lr: float
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    t: int = 0
    m: dict[str, np.ndarray] = field(default_factory=dict)
    v: dict[str, np.ndarray] = field(default_factory=dict)

    def step(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> None:
        self.t += 1
        c1 = 1 - self.b1**self.t
        c2 = 1 - self.b2**self.t
        for k, g in grads.items():
            if k not in self.m:
                self.m[k] = np.zeros_like(g)
                self.v[k] = np.zeros_like(g)
            m, v = self.m[k], self.v[k]
            m *= self.b1
            m += (1 - self.b1) * g
            v *= self.b2
            v += (1 - self.b2) * g * g
            params[k] -= self.lr * (m / c1) / (np.sqrt(v / c2) + self.eps)


class GRUEnsemble:
    """S independent stacked GRUs with a linear head, one per seed, updated in lock-step."""

    def __init__(self, seeds: list[int], n_in: int, hidden: int, layers: int, n_out: int):
        self.S, self.H, self.layers, self.n_out = len(seeds), hidden, layers, n_out
        k = 1.0 / np.sqrt(hidden)
        p: dict[str, np.ndarray] = {}
        rngs = [np.random.default_rng(s) for s in seeds]

        def init(shape: tuple[int, ...]) -> np.ndarray:
            return np.stack([r.uniform(-k, k, size=shape) for r in rngs]).astype(np.float32)

        for layer in range(layers):
            i = n_in if layer == 0 else hidden
            p[f"wi{layer}"] = init((i, 3 * hidden))
            p[f"wh{layer}"] = init((hidden, 3 * hidden))
            p[f"bi{layer}"] = init((1, 3 * hidden))
            p[f"bh{layer}"] = init((1, 3 * hidden))
        p["wo"] = init((hidden, n_out))
        p["bo"] = init((1, n_out))
        self.params = p

    # -- recurrent part --------------------------------------------------------------------------
    def run(self, x: np.ndarray, keep: bool = False) -> tuple[np.ndarray, list]:
        """x [T, S, B, I] -> top-layer hidden states [T, S, B, H] (and the cache for backward)."""
        p, H = self.params, self.H
        cache = []
        for layer in range(self.layers):
            wi, wh, bi, bh = p[f"wi{layer}"], p[f"wh{layer}"], p[f"bi{layer}"], p[f"bh{layer}"]
            T, S, B, _ = x.shape
            h = np.zeros((S, B, H), np.float32)
            out = np.empty((T, S, B, H), np.float32)
            steps = []
            for t in range(T):
                gi = _mm(x[t], wi) + bi
                gh = _mm(h, wh) + bh
                rz = _sigmoid(gi[..., : 2 * H] + gh[..., : 2 * H])
                r, z = rz[..., :H], rz[..., H:]
                ghn = gh[..., 2 * H :]
                n = np.tanh(gi[..., 2 * H :] + r * ghn)
                h_new = n + z * (h - n)
                if keep:
                    steps.append((h, r, z, n, ghn))
                h = h_new
                out[t] = h
            if keep:
                cache.append((x, steps))
            x = out
        return x, cache

    def backprop(self, cache: list, d_top: np.ndarray) -> dict[str, np.ndarray]:
        """Gradients of the recurrent weights given dLoss/d(top hidden states) [T, S, B, H]."""
        p, H = self.params, self.H
        grads: dict[str, np.ndarray] = {}
        d_out = d_top
        for layer in reversed(range(self.layers)):
            x, steps = cache[layer]
            wi, wh = p[f"wi{layer}"], p[f"wh{layer}"]
            T, S, B, _ = x.shape
            wh_t = np.swapaxes(wh, 1, 2)
            d_gi = np.empty((T, S, B, 3 * H), np.float32)
            d_wh = np.zeros_like(wh)
            d_bh = np.zeros_like(p[f"bh{layer}"])
            dh_next = np.zeros((S, B, H), np.float32)
            for t in reversed(range(T)):
                h_prev, r, z, n, ghn = steps[t]
                dh = d_out[t] + dh_next
                dn = dh * (1 - z)
                dz = dh * (h_prev - n)
                da_n = dn * (1 - n * n)
                da_r = da_n * ghn * r * (1 - r)
                da_z = dz * z * (1 - z)
                d_gh = np.concatenate([da_r, da_z, da_n * r], -1)
                d_gi[t] = np.concatenate([da_r, da_z, da_n], -1)
                d_wh += _mm(np.swapaxes(h_prev, 1, 2), d_gh)
                d_bh += d_gh.sum(1, keepdims=True)
                dh_next = dh * z + _mm(d_gh, wh_t)
            xs = np.ascontiguousarray(np.swapaxes(x, 0, 1)).reshape(S, T * B, -1)
            gs = np.ascontiguousarray(np.swapaxes(d_gi, 0, 1)).reshape(S, T * B, -1)
            grads[f"wi{layer}"] = _mm(np.swapaxes(xs, 1, 2), gs)
            grads[f"bi{layer}"] = gs.sum(1, keepdims=True)
            grads[f"wh{layer}"] = d_wh
            grads[f"bh{layer}"] = d_bh
            if layer > 0:
                d_out = _mm(gs, np.swapaxes(wi, 1, 2)).reshape(S, T, B, -1).swapaxes(0, 1)
        return grads


# ------------------------------------------------------------------------------------------------
# training loops
# ------------------------------------------------------------------------------------------------
@dataclass
class TrainSettings:
    hidden: int = 16
    layers: int = 2
    batch_size: int = 64
    epochs: int = 2
    min_steps: int = 60
    max_steps: int = 400
    lr: float = 5e-3

    def steps(self, n_train: int) -> int:
        per_epoch = int(np.ceil(n_train / self.batch_size))
        return int(np.clip(self.epochs * per_epoch, self.min_steps, self.max_steps))


def _batches(train_idx: np.ndarray, batch: int, steps: int, rngs: list[np.random.Generator]) -> np.ndarray:
    """[steps, S, B] indices: each member walks through its own reshuffled epochs."""
    S, n = train_idx.shape
    b = min(batch, n)
    per_epoch = max(1, n // b)
    n_epochs = int(np.ceil(steps / per_epoch))
    out = np.empty((n_epochs * per_epoch, S, b), np.int64)
    for s, rng in enumerate(rngs):
        perms = np.stack([rng.permutation(n)[: per_epoch * b] for _ in range(n_epochs)])
        out[:, s] = train_idx[s][perms.reshape(n_epochs * per_epoch, b)]
    return out[:steps]


def _gather(x: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """x [N, T, F], idx [S, B] -> [T, S, B, F] (contiguous)."""
    return np.ascontiguousarray(np.moveaxis(x[idx], 2, 0))


def classifier_accuracy(
    x: np.ndarray, y: np.ndarray, lengths: np.ndarray, seeds: list[int], settings: TrainSettings,
    test_fraction: float = 0.2,
) -> np.ndarray:
    """Train one 2-layer GRU classifier per seed on a stratified (1 - test_fraction) split and
    return each one's accuracy on its held-out part. x [N, T, F] float32, y [N] in {0, 1}."""
    S = len(seeds)
    rngs = [np.random.default_rng([s, 7919]) for s in seeds]
    tr_idx, te_idx = [], []
    for rng in rngs:
        tr, te = [], []
        for cls in (0, 1):
            members = rng.permutation(np.flatnonzero(y == cls))
            k = max(1, int(round(len(members) * test_fraction)))
            te.append(members[:k])
            tr.append(members[k:])
        tr_idx.append(np.concatenate(tr))
        te_idx.append(np.concatenate(te))
    n_tr = min(len(t) for t in tr_idx)
    n_te = min(len(t) for t in te_idx)
    train_idx = np.stack([t[:n_tr] for t in tr_idx])
    test_idx = np.stack([t[:n_te] for t in te_idx])
    net = GRUEnsemble(seeds, x.shape[2], settings.hidden, settings.layers, 1)
    opt = _Adam(settings.lr)
    steps = settings.steps(n_tr)
    yf = y.astype(np.float32)
    s_ix = np.arange(S)[:, None]
    for batch in _batches(train_idx, settings.batch_size, steps, rngs):
        xb = _gather(x, batch)
        last = lengths[batch] - 1  # [S, B]
        hs, cache = net.run(xb, keep=True)
        b_ix = np.arange(batch.shape[1])[None, :]
        h_last = hs[last, s_ix, b_ix]  # [S, B, H]
        wo, bo = net.params["wo"], net.params["bo"]
        logit = (_mm(h_last, wo) + bo)[..., 0]
        g = (_sigmoid(logit) - yf[batch]) / batch.shape[1]  # dBCE/dlogit, mean over the batch
        grads = {"wo": _mm(np.swapaxes(h_last, 1, 2), g[..., None]), "bo": g.sum(1)[:, None, None]}
        d_top = np.zeros_like(hs)
        d_top[last, s_ix, b_ix] = g[..., None] * np.swapaxes(wo, 1, 2)
        grads.update(net.backprop(cache, d_top))
        opt.step(net.params, grads)
    correct = np.zeros(S)
    for i in range(0, n_te, 1024):
        idx = test_idx[:, i : i + 1024]
        hs, _ = net.run(_gather(x, idx))
        h_last = hs[lengths[idx] - 1, s_ix, np.arange(idx.shape[1])[None, :]]
        logit = (_mm(h_last, net.params["wo"]) + net.params["bo"])[..., 0]
        correct += ((logit > 0) == (y[idx] == 1)).sum(1)
    return correct / n_te


def regression_mae(
    x_train: np.ndarray, y_train: np.ndarray, m_train: np.ndarray,
    x_test: np.ndarray, y_test: np.ndarray, m_test: np.ndarray,
    seeds: list[int], settings: TrainSettings,
) -> np.ndarray:
    """Train a GRU (one per seed) to map x [N, T, I] to y [N, T, O] (masked by m, L1 loss) on the
    train arrays and return each seed's masked mean absolute error on the test arrays."""
    S = len(seeds)
    rngs = [np.random.default_rng([s, 104729]) for s in seeds]
    net = GRUEnsemble(seeds, x_train.shape[2], settings.hidden, settings.layers, y_train.shape[2])
    opt = _Adam(settings.lr)
    n = len(x_train)
    train_idx = np.tile(np.arange(n), (S, 1))
    for batch in _batches(train_idx, settings.batch_size, settings.steps(n), rngs):
        xb = _gather(x_train, batch)
        yb, mb = _gather(y_train, batch), _gather(m_train, batch)
        hs, cache = net.run(xb, keep=True)
        T, _, B, H = hs.shape
        wo, bo = net.params["wo"], net.params["bo"]
        flat = np.ascontiguousarray(np.swapaxes(hs, 0, 1)).reshape(S, T * B, H)
        pred = (_mm(flat, wo) + bo).reshape(S, T, B, -1).swapaxes(0, 1)
        denom = np.maximum(mb.sum((0, 2, 3)), 1.0)  # per member
        g = np.sign(pred - yb) * mb / denom[None, :, None, None]
        gf = np.ascontiguousarray(np.swapaxes(g, 0, 1)).reshape(S, T * B, -1)
        grads = {"wo": _mm(np.swapaxes(flat, 1, 2), gf), "bo": gf.sum(1, keepdims=True)}
        d_top = _mm(gf, np.swapaxes(wo, 1, 2)).reshape(S, T, B, H).swapaxes(0, 1)
        grads.update(net.backprop(cache, np.ascontiguousarray(d_top)))
        opt.step(net.params, grads)
    err = np.zeros(S)
    cnt = np.zeros(S)
    for i in range(0, len(x_test), 1024):
        sl = slice(i, i + 1024)
        xb = np.broadcast_to(np.moveaxis(x_test[sl], 1, 0)[:, None], (x_test.shape[1], S) + x_test[sl].shape[::2])
        hs, _ = net.run(np.ascontiguousarray(xb))
        T, _, B, H = hs.shape
        flat = np.ascontiguousarray(np.swapaxes(hs, 0, 1)).reshape(S, T * B, H)
        pred = (_mm(flat, net.params["wo"]) + net.params["bo"]).reshape(S, T, B, -1)
        yt = np.moveaxis(y_test[sl], 1, 0)[None]  # [1, T, B, O]
        mt = np.moveaxis(m_test[sl], 1, 0)[None]
        err += (np.abs(pred - yt) * mt).sum((1, 2, 3))
        cnt += mt.sum()
    return err / np.maximum(cnt, 1.0)
