"""Entity-attribute model: an autoregressive product of categoricals over static tokens.

Static columns (sector, industry, region type, binned numeric attributes) are generated first,
one column at a time given the previous ones; sequences are then generated conditioned on them,
so each synthetic entity is internally consistent and its static columns are truly constant.

Privacy: a category seen in fewer than ``min_condition_count`` training entities is generated like
any other, but later columns are conditioned on it only through one shared "rare" slot: a
conditional learned from one or two entities would just replay those entities' attributes (on the
103-stock panel, a one-stock industry pinned that stock's market cap and price levels).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class StaticAR(nn.Module):
    def __init__(self, cards: list[int], hidden: int = 64):
        super().__init__()
        self.cards = cards
        self.offsets = [sum(c + 1 for c in cards[:j]) for j in range(len(cards))]  # +1: the rare slot
        total = max(sum(c + 1 for c in cards), 1)
        self.nets = nn.ModuleList(
            nn.Sequential(nn.Linear(total, hidden), nn.SiLU(), nn.Linear(hidden, c)) for c in cards
        )
        self.total = total
        for j, c in enumerate(cards):  # token -> input slot (identity until set_rare)
            self.register_buffer(f"slot_{j}", torch.arange(c))

    def set_rare(self, tokens: torch.Tensor, min_count: int) -> None:
        """Route parent tokens seen in fewer than ``min_count`` rows of ``tokens`` to the rare slot."""
        for j, c in enumerate(self.cards):
            counts = torch.bincount(tokens[:, j].cpu(), minlength=c)[:c]
            slot = torch.where(counts >= min_count, torch.arange(c), torch.full((c,), c))
            getattr(self, f"slot_{j}").copy_(slot.to(getattr(self, f"slot_{j}").device))

    def _one_hot_prefix(self, tokens: torch.Tensor, j: int) -> torch.Tensor:
        x = torch.zeros(tokens.shape[0], self.total, device=tokens.device)
        rows = torch.arange(tokens.shape[0], device=tokens.device)
        for i in range(j):
            x[rows, self.offsets[i] + getattr(self, f"slot_{i}")[tokens[:, i]]] = 1.0
        return x

    def loss(self, tokens: torch.Tensor) -> torch.Tensor:
        losses = [F.cross_entropy(net(self._one_hot_prefix(tokens, j)), tokens[:, j]) for j, net in enumerate(self.nets)]
        return torch.stack(losses).sum() if losses else torch.zeros(())

    @torch.inference_mode()
    def sample(
        self, n: int, known: torch.Tensor | None = None, known_mask: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Sample [n, S] tokens column by column; columns in ``known_mask`` are kept as given."""
        device = next(self.parameters()).device if len(self.cards) else torch.device("cpu")
        out = torch.zeros(n, len(self.cards), dtype=torch.long, device=device)
        for j, net in enumerate(self.nets):
            probs = F.softmax(net(self._one_hot_prefix(out, j)), -1)
            draw = torch.multinomial(probs.cpu(), 1, generator=generator).squeeze(1).to(device)
            if known is not None and known_mask is not None:
                draw = torch.where(known_mask[:, j], known[:, j], draw)
            out[:, j] = draw
        return out
