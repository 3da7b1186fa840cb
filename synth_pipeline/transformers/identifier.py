"""Identifier columns: never modelled; a release gets fresh surrogate values of the same type."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pandas as pd

from synth_pipeline.transformers.base import ColumnTransformer

SURROGATE_OFFSET = 10**9  # integer surrogates start above any plausible real id


@dataclass
class IdentifierTransformer(ColumnTransformer):
    KINDS: ClassVar[tuple[str, ...]] = ("identifier",)

    def fit(self, col: pd.Series, units: np.ndarray | None = None, prot: object = None) -> IdentifierTransformer:
        self.dtype = str(col.dtype)  # only the type is kept
        return self

    def inverse(self, n: int, prefix: str) -> np.ndarray:
        """``n`` fresh keys: integers above 10**9 for integer ids, ``<prefix>-000001`` text otherwise."""
        if self.dtype.startswith(("int", "uint", "Int", "UInt")):
            return np.arange(1, n + 1, dtype=np.int64) + SURROGATE_OFFSET
        width = max(6, len(str(n)))
        return pd.Series(np.arange(1, n + 1)).astype(str).str.zfill(width).radd(prefix + "-").to_numpy(dtype=object)
