"""Memorization audit: DCR share against an entity holdout, exact copies, NNDR, row-level matches."""

from synth_pipeline.evaluation.privacy.dcr import DCRResult, dcr_audit, wilson_interval
from synth_pipeline.evaluation.privacy.distances import SearchInfo, nearest, search
from synth_pipeline.evaluation.privacy.matches import exact_copies, row_matches

__all__ = ["DCRResult", "SearchInfo", "dcr_audit", "exact_copies", "nearest", "row_matches", "search", "wilson_interval"]
