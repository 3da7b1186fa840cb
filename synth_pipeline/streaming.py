"""Bounded generation: a maximum on the number of sequences, and sampling streamed to a file in chunks.

``write_samples(syn, n, path, seed)`` calls ``Synthesizer.sample`` on chunks of at most
``chunk_size`` sequences and appends each to a Parquet (``pyarrow.parquet.ParquetWriter``) or CSV
file, so peak memory depends on the chunk, not on ``n``. Chunk ``i`` is sampled with
:func:`chunk_seed` ``(seed, i)`` (chunk 0 with ``seed`` itself, so ``n <= chunk_size`` gives exactly
``sample(n, seed=seed)``); surrogate keys are renumbered across chunks so they stay unique. The
file is written under a temporary name and renamed into place when complete.

The maximum (:func:`max_sequences`) is checked before any model is loaded or trained: the CLI's
``generate -n`` and a dataset config's ``generate.n_sequences`` (at config load time).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from synth_pipeline.errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd

    from synth_pipeline.synthesizer import Synthesizer

DEFAULT_MAX_SEQUENCES = 1_000_000
MAX_SEQUENCES_ENV = "SYNTH_PIPELINE_MAX_SEQUENCES"
CHUNK_ROWS = 200_000  # target rows per chunk (chunk_size = CHUNK_ROWS // sequence length, at most 4096)
MAX_CHUNK_SEQUENCES = 4096


def _positive_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{what}={value!r} must be a positive integer")
    return value


def max_sequences(value: int | None = None, what: str = "--max-sequences") -> int:
    """The configured maximum: ``value`` when given, else ``$SYNTH_PIPELINE_MAX_SEQUENCES``, else 1,000,000."""
    if value is not None:
        return _positive_int(value, what)
    env = os.environ.get(MAX_SEQUENCES_ENV)
    if env:
        try:
            return _positive_int(int(env), MAX_SEQUENCES_ENV)
        except ValueError:
            raise ConfigError(f"{MAX_SEQUENCES_ENV}={env!r} must be a positive integer") from None
    return DEFAULT_MAX_SEQUENCES


def check_n_sequences(n: Any, maximum: int | None = None, what: str = "-n") -> int:
    """``n`` is a positive integer not above the maximum (raises ConfigError naming the fix)."""
    n = _positive_int(n, what)
    limit = max_sequences(maximum)
    if n > limit:
        raise ConfigError(
            f"{what}={n:,} exceeds the maximum of {limit:,} sequences; generate fewer (several runs with "
            f"different seeds) or raise the limit (--max-sequences, generate.max_sequences in a config, or "
            f"${MAX_SEQUENCES_ENV}) if the time and disk it needs are intended"
        )
    return n


def chunk_seed(seed: int, index: int) -> int:
    """Seed of chunk ``index``: ``seed`` for chunk 0, else derived from (seed, index) by SeedSequence."""
    if index == 0:
        return int(seed)
    return int(np.random.SeedSequence(int(seed), spawn_key=(int(index),)).generate_state(1)[0])


def default_chunk_size(syn: Synthesizer) -> int:
    enc = getattr(syn, "encoder", None)
    length = max(1, int(getattr(enc, "max_len", 1) or 1))
    return max(1, min(MAX_CHUNK_SEQUENCES, CHUNK_ROWS // length))


def iter_samples(syn: Synthesizer, n: int, seed: int, chunk_size: int | None = None, *, start: int = 0,
                 n_total: int | None = None) -> Iterator[pd.DataFrame]:
    """Yield ``n`` synthetic sequences as DataFrames of at most ``chunk_size`` sequences each. A shard
    of a larger output passes ``start`` (sequences before it) and ``n_total`` (the whole output)."""
    for _, df in _chunks(syn, n, seed, chunk_size, start=start, n_total=n_total):
        yield df


def _chunks(syn: Synthesizer, n: int, seed: int, chunk_size: int | None, *, start: int = 0,
            n_total: int | None = None) -> Iterator[tuple[int, pd.DataFrame]]:
    """The one sampling loop behind a streamed file and a release's shard parts: chunk ``i`` is
    sampled with ``chunk_seed(seed, i)`` and its surrogate keys renumbered to be unique over the whole
    output. One chunk of a whole output is exactly ``sample(n, seed)``. A shard does not know how many
    rows the shards before it wrote, so its row-level identifiers start at an upper bound
    (``start`` times the longest sequence) instead of the exact count."""
    n = _positive_int(n, "n")
    n_total = n if n_total is None else n_total
    whole = start == 0 and n == n_total
    size = _positive_int(chunk_size, "chunk_size") if chunk_size is not None else default_chunk_size(syn)
    max_len = max(1, int(getattr(getattr(syn, "encoder", None), "max_len", 1) or 1))
    n_chunks = -(-n // size)
    seq_done = row_done = 0
    for i in range(n_chunks):
        k = min(size, n - i * size)
        df = syn.sample(k, seed=chunk_seed(seed, i))
        if n_chunks > 1 or not whole:
            rows_before = row_done if whole else (start + seq_done) * max_len
            df = _renumber(df, syn, start + seq_done, rows_before, n_total)
        seq_done += k
        row_done += len(df)
        yield k, df


def _renumber(df: pd.DataFrame, syn: Synthesizer, seq_offset: int, row_offset: int, n_total: int) -> pd.DataFrame:
    """Surrogate keys restart in every chunk: make them unique over the whole output (same style:
    integers above 10**9, or ``syn-000001`` strings)."""
    import pandas as pd

    s = syn.schema
    key = s.entity_key or "sequence_id"
    id_cols = [c.name for c in s.columns if str(getattr(c.kind, "value", c.kind)) == "identifier"
               and c.name != key and c.name in df.columns]
    width_seq = max(6, len(str(n_total)))
    for col, offset, prefix, width, per_row in (
        [(key, seq_offset, "syn", width_seq, False)]
        + [(c, row_offset, f"syn-{c}", max(6, len(str(row_offset + len(df)))) + 2, True) for c in id_cols]
    ):
        if col not in df.columns:
            continue
        codes = np.arange(len(df)) if per_row else pd.factorize(df[col], sort=False)[0]
        num = codes.astype(np.int64) + offset + 1
        if pd.api.types.is_integer_dtype(df[col]):
            df[col] = (num + 10**9).astype(df[col].dtype)
        else:
            df[col] = pd.Series([f"{prefix}-{v:0{width}d}" for v in num], index=df.index, dtype=df[col].dtype)
    return df


def write_samples(syn: Synthesizer, n: int, path: str | Path, seed: int = 0, *, chunk_size: int | None = None,
                  fmt: str | None = None, progress: Any = None) -> dict[str, Any]:
    """Stream ``n`` sequences to ``path`` (``.parquet`` / ``.csv``, or ``fmt``); returns
    ``{"sequences": n, "rows": rows, "chunks": k, "path": path}``. The file appears only when complete.
    ``progress``: optional callable taking a line of text per chunk."""
    from synth_pipeline.io_utils import atomic_write
    from synth_pipeline.model_files import output_format

    path = Path(path)
    fmt = fmt or output_format(path)
    stats = {"sequences": 0, "rows": 0, "chunks": 0, "path": str(path)}

    def write(tmp: Path) -> None:
        if fmt == "parquet":
            _write_parquet(tmp)
        elif fmt == "csv":
            _write_csv(tmp)
        else:
            raise ConfigError(f"unknown output format '{fmt}'; valid: parquet, csv")

    def chunks() -> Iterator[pd.DataFrame]:
        for k, df in _chunks(syn, n, seed, chunk_size):
            stats["chunks"] += 1
            stats["rows"] += len(df)
            stats["sequences"] += k
            if progress is not None:
                progress(f"generated {stats['sequences']:,}/{n:,} sequences ({stats['rows']:,} rows)")
            yield df

    def _write_parquet(tmp: Path) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        writer = None
        try:
            for df in chunks():
                if writer is None:
                    table = pa.Table.from_pandas(df, preserve_index=False)
                    writer = pq.ParquetWriter(tmp, table.schema)
                else:
                    table = pa.Table.from_pandas(df, schema=writer.schema, preserve_index=False)
                writer.write_table(table)
        finally:
            if writer is not None:
                writer.close()

    def _write_csv(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            for i, df in enumerate(chunks()):
                df.to_csv(fh, header=i == 0, index=False)

    atomic_write(path, write)
    return stats
