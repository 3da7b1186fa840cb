"""The column-transformer contract (RDT-style): one class per column kind, fit on the train split
only, ``transform`` to the model's space, ``inverse`` back to the column's values and dtype, and a
JSON round trip that holds only protected aggregates (see ``protection.py``)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from synth_pipeline.schema import NUMERIC_KINDS, ColumnKind

_REGISTRY: dict[str, type[ColumnTransformer]] = {}


@dataclass
class ColumnTransformer:
    name: str
    kind: str
    dtype: str
    static: bool = False
    has_missing: bool = False

    KINDS: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        for k in cls.KINDS:
            _REGISTRY[k] = cls

    @property
    def is_numeric(self) -> bool:
        return ColumnKind(self.kind) in NUMERIC_KINDS

    def fit(self, col: pd.Series, units: np.ndarray, prot: Any) -> ColumnTransformer:  # pragma: no cover
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ColumnTransformer:
        kind = d["kind"]
        if kind not in _REGISTRY:
            raise ValueError(f"no transformer for column kind '{kind}'; known: {sorted(_REGISTRY)}")
        return _REGISTRY[kind]._from_dict(dict(d))

    @classmethod
    def _from_dict(cls, d: dict[str, Any]) -> ColumnTransformer:
        return cls(**d)


def transformer_for(name: str, kind: ColumnKind, dtype: str, static: bool) -> ColumnTransformer:
    """A fresh transformer of the class registered for ``kind``."""
    return _REGISTRY[kind.value](name=name, kind=kind.value, dtype=dtype, static=static)
