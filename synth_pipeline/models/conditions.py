"""The condition encoder: how known cells reach the latent prior. One mask API covers unconditional
generation, imputation, forecasting and metadata conditioning; the denoiser always sees the same
three tensors:

* ``known_num`` [B, T, Fn]: the encoded numeric value where known, 0 elsewhere;
* ``known_mask`` [B, T, Fn]: 1.0 where a numeric value is known;
* ``known_cat`` [B, T, Fk]: the level index where known, else the column's "unknown" token (index =
  its number of levels, one more embedding row in the denoiser).

Training draws random masks (:meth:`ConditionEncoder.random`) so one prior learns every task;
sampling encodes the user's :class:`~synth_pipeline.models.batch.Conditions`
(:meth:`ConditionEncoder.encode`). Both end in :meth:`ConditionEncoder.known_inputs`.
"""

from __future__ import annotations

import torch

from synth_pipeline.models.batch import Batch, Conditions

Known = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # known_num, known_mask, known_cat


class ConditionEncoder:
    def __init__(self, n_num: int, cat_cards: list[int], p_unconditional: float):
        self.n_num, self.cat_cards, self.p_unconditional = n_num, list(cat_cards), p_unconditional

    def unknown_tokens(self, device: torch.device) -> torch.Tensor:
        return torch.tensor(self.cat_cards, dtype=torch.long, device=device)

    def known_inputs(self, num: torch.Tensor, num_known: torch.Tensor, cat: torch.Tensor,
                     cat_known: torch.Tensor) -> Known:
        """Known cells as the denoiser reads them (masks are bool)."""
        cat_in = torch.where(cat_known, cat, self.unknown_tokens(cat.device).expand_as(cat)) if self.cat_cards else cat
        return num * num_known, num_known.float(), cat_in

    def random(self, b: Batch, gen: torch.Generator) -> Known:
        """Training masks, one task per sequence: none (p_unconditional), random cells, a prefix
        (forecasting) or whole columns (metadata), each equally likely after the unconditional share."""
        B, T = b.present.shape
        Fn, Fk = b.num.shape[-1], b.cat.shape[-1]
        F_all = Fn + Fk
        dev = b.num.device
        r = torch.rand(B, generator=gen)
        p = self.p_unconditional
        task = torch.where(r < p, 0, 1 + ((r - p) / max(1 - p, 1e-6) * 3).long().clamp(max=2))
        rate = torch.rand(B, 1, 1, generator=gen) * 0.8 + 0.1
        impute = torch.rand(B, T, F_all, generator=gen) < rate
        k = (torch.rand(B, 1, generator=gen) * T).long()
        forecast = (torch.arange(T)[None, :] < k)[..., None].expand(B, T, F_all)
        meta = (torch.rand(B, 1, F_all, generator=gen) < 0.5).expand(B, T, F_all)
        known = torch.zeros(B, T, F_all, dtype=torch.bool)
        known = torch.where((task == 1)[:, None, None], impute, known)
        known = torch.where((task == 2)[:, None, None], forecast, known)
        known = torch.where((task == 3)[:, None, None], meta, known)
        known = known.to(dev) & (b.present[..., None] > 0)
        num_known = known[..., :Fn] & (b.num_miss < 0.5)  # a missing value is never "known"
        return self.known_inputs(b.num, num_known, b.cat, known[..., Fn:])

    def encode(self, c: Conditions, device: torch.device) -> tuple[Known, torch.Tensor]:
        """The sampling conditions' known cells, and the known numeric values themselves (to paste
        back exactly after decoding)."""
        B, T = c.present.shape
        Fn, Fk = self.n_num, len(self.cat_cards)
        num = c.num.to(device) if c.num is not None else torch.zeros(B, T, Fn, device=device)
        num_known = (c.num_known.to(device) if c.num_known is not None
                     else torch.zeros(B, T, Fn, dtype=torch.bool, device=device))
        if c.cat is not None and Fk:
            cat, cat_known = c.cat.to(device), c.cat_known.to(device)
        else:
            cat = torch.zeros(B, T, Fk, dtype=torch.long, device=device)
            cat_known = torch.zeros(B, T, Fk, dtype=torch.bool, device=device)
        return self.known_inputs(num, num_known.bool(), cat, cat_known), num
