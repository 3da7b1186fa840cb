"""Sharded generation: a release's synthetic sequences split into seeded shards, one Parquet part each.

Why: one process sampling tens of millions of rows outgrows one worker. The same pure functions are
meant for Airflow's mapped ``generate`` tasks (one shard per task instance) and for ``run_release`` /
the CLI (all shards in one process), so a seed and a shard count give the same parts either way.

- :func:`plan_shards` splits ``n_sequences`` into contiguous shards (count from the config, or derived
  from ``n_sequences`` at :data:`DEFAULT_SEQUENCES_PER_SHARD`); shard ``i`` is seeded with
  :func:`streaming.chunk_seed` ``(seed, i)``.
- :func:`write_shard` samples one shard and writes ``part-<i>.parquet`` atomically (temp name, then
  rename); its surrogate keys are offset by the shard's first sequence so they stay unique over the
  release.
- :func:`part_entries` lists the parts with sha256 and row counts for the release manifest.

``stages.plan_generation`` / ``stages.generate_shard`` / ``stages.generate`` call these; ``generate``
writes any part not yet staged, so the in-process path and the mapped path share every function.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from synth_pipeline.errors import ConfigError, ReleaseError
from synth_pipeline.io_utils import READABLE, atomic_write
from synth_pipeline.release_format import PART_RE, sha256_file  # PART_RE: re-exported, a part's name
from synth_pipeline.streaming import _positive_int, chunk_seed, iter_samples

if TYPE_CHECKING:
    from synth_pipeline.synthesizer import Synthesizer

DEFAULT_SEQUENCES_PER_SHARD = 100_000
MAX_SHARDS = 1024


@dataclass(frozen=True)
class ShardSpec:
    """One shard: its index, first sequence, number of sequences and sampling seed."""

    index: int
    count: int
    start: int
    n_total: int
    seed: int

    @property
    def part_name(self) -> str:
        return f"part-{self.index:05d}.parquet"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ShardSpec:
        """Rebuild from an XCom dict (mapped task argument), checking the fields."""
        try:
            spec = cls(**{k: int(d[k]) for k in ("index", "count", "start", "n_total", "seed")})
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"shard spec {d!r} is not valid ({e}); build it with plan_shards()") from None
        if spec.index < 0 or spec.count < 1 or spec.start < 0 or spec.start + spec.count > spec.n_total:
            raise ConfigError(f"shard spec {d!r} is out of range; build it with plan_shards()")
        return spec


def shard_count(n_sequences: int, shards: int | None = None,
                per_shard: int = DEFAULT_SEQUENCES_PER_SHARD) -> int:
    """The number of shards: ``shards`` when configured, else ceil(n / per_shard); never above n."""
    n = _positive_int(n_sequences, "n_sequences")
    if shards is None:
        k = -(-n // _positive_int(per_shard, "per_shard"))
    else:
        k = _positive_int(shards, "generate.shards")
        if k > MAX_SHARDS:
            raise ConfigError(f"generate.shards={k} is above the maximum {MAX_SHARDS}; use fewer, larger shards")
    return max(1, min(k, n))


def plan_shards(n_sequences: int, seed: int, shards: int | None = None,
                per_shard: int = DEFAULT_SEQUENCES_PER_SHARD) -> list[ShardSpec]:
    """Split ``n_sequences`` into contiguous, near-equal shards, each with its own seed."""
    n = _positive_int(n_sequences, "n_sequences")
    k = shard_count(n, shards, per_shard)
    base, extra = divmod(n, k)
    out, start = [], 0
    for i in range(k):
        count = base + (1 if i < extra else 0)
        out.append(ShardSpec(index=i, count=count, start=start, n_total=n, seed=chunk_seed(int(seed), i)))
        start += count
    return out


def sample_shard(syn: Synthesizer, spec: ShardSpec):  # noqa: ANN201 - pandas DataFrame
    """Sample one shard's sequences (chunked for bounded memory) with keys unique over the release."""
    import pandas as pd

    frames = list(iter_samples(syn, spec.count, spec.seed, start=spec.start, n_total=spec.n_total))
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


def write_shard(syn: Synthesizer, spec: ShardSpec, folder: str | Path) -> dict[str, Any]:
    """Sample ``spec`` and write ``<folder>/part-<i>.parquet`` atomically; return its manifest entry."""
    df = sample_shard(syn, spec)
    return write_part(df, spec, folder)


def write_part(df, spec: ShardSpec, folder: str | Path) -> dict[str, Any]:  # noqa: ANN001 - DataFrame
    """Write one shard's frame atomically (temp file, fsync, rename); a release part is readable."""
    final = atomic_write(Path(folder) / spec.part_name, lambda tmp: df.to_parquet(tmp, index=False), READABLE)
    return {"path": spec.part_name, "shard": spec.index, "sequences": spec.count, "rows": int(len(df)),
            "sha256": sha256_file(final), "size": final.stat().st_size}


def write_shards(syn: Synthesizer, n_sequences: int, seed: int, folder: str | Path, shards: int | None = None,
                 per_shard: int = DEFAULT_SEQUENCES_PER_SHARD) -> list[dict[str, Any]]:
    """All shards in one process (``run_release`` / CLI path): the same parts a mapped run writes."""
    return [write_shard(syn, spec, folder) for spec in plan_shards(n_sequences, seed, shards, per_shard)]


def part_entries(folder: str | Path, specs: list[ShardSpec]) -> list[dict[str, Any]]:
    """Manifest entries of every planned part, in shard order; raises if one is missing or extra."""
    import pyarrow.parquet as pq

    folder = Path(folder)
    want = {s.part_name for s in specs}
    have = {p.name for p in folder.iterdir() if PART_RE.match(p.name)} if folder.is_dir() else set()
    if want - have:
        raise ReleaseError(f"shard parts missing in '{folder}': {sorted(want - have)}; rerun their generate tasks")
    if have - want:
        raise ReleaseError(f"unplanned parts in '{folder}': {sorted(have - want)}; the shard count changed, "
                           "clear the staging folder and regenerate")
    out = []
    for s in specs:
        p = folder / s.part_name
        out.append({"path": s.part_name, "shard": s.index, "sequences": s.count,
                    "rows": int(pq.ParquetFile(p).metadata.num_rows), "sha256": sha256_file(p),
                    "size": p.stat().st_size})
    return out
