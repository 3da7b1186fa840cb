"""Reversible column transformers, one per column kind, each owning its privacy protection.

=============  =====================================  ==========================================
kind           class                                  protection
=============  =====================================  ==========================================
continuous     numeric.ContinuousTransformer          randomised k-th-extreme range, smoothed knots
integer        numeric.IntegerTransformer             same, rounded inside the protected range
datetime       numeric.DatetimeTransformer            same, on nanoseconds
categorical    categorical.CategoricalTransformer     levels of < k entities -> protected token
binary         categorical.BinaryTransformer          same
identifier     identifier.IdentifierTransformer       never modelled: fresh surrogate keys
time index     time_layout.TimeLayout                 k-anonymous start / length bins on the grid
=============  =====================================  ==========================================

Under differential privacy (``model.privacy``; ``TableEncoder(dp=StatisticsBudget)``) each of these
fits takes a ``dp_noise.StatsAccountant`` instead and releases only noisy statistics (``dp_noise.py``).
"""

from synth_pipeline.transformers.base import ColumnTransformer, transformer_for
from synth_pipeline.transformers.categorical import (
    NA_LEVEL,
    RARE_LEVEL,
    BinaryTransformer,
    CategoricalTransformer,
)
from synth_pipeline.transformers.identifier import IdentifierTransformer
from synth_pipeline.transformers.numeric import (
    ContinuousTransformer,
    DatetimeTransformer,
    IntegerTransformer,
    QuantileMap,
)
from synth_pipeline.transformers.protection import RARE_TOKEN, KAnonymousBins, Protection
from synth_pipeline.transformers.time_layout import (
    N_CALENDAR,
    TimeLayout,
    calendar,
    from_ns,
    infer_freq,
    integer_time_format,
    observed_holidays,
    time_grid,
    to_ns,
)

__all__ = [
    "NA_LEVEL", "RARE_LEVEL", "RARE_TOKEN", "N_CALENDAR", "BinaryTransformer", "CategoricalTransformer",
    "ColumnTransformer", "ContinuousTransformer", "DatetimeTransformer", "IdentifierTransformer",
    "IntegerTransformer", "KAnonymousBins", "Protection", "QuantileMap", "TimeLayout", "calendar", "from_ns",
    "infer_freq", "integer_time_format", "observed_holidays", "time_grid", "to_ns", "transformer_for",
]
