"""Entity-attribute model: an autoregressive product of categoricals over static tokens.

Static columns (sector, industry, region type, binned numeric attributes) are generated first,
one column at a time given the previous ones; sequences are then generated conditioned on them,
so each synthetic entity is internally consistent and its static columns are truly constant.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class StaticAR(nn.Module):
    def __init__(self, cards: list[int], hidden: int = 64):
        super().__init__()
        self.cards = cards
        self.offsets = [sum(cards[:j]) for j in range(len(cards))]
        total = max(sum(cards), 1)
        self.nets = nn.ModuleList(
            nn.Sequential(nn.Linear(total, hidden), nn.SiLU(), nn.Linear(hidden, c)) for c in cards
        )
        self.total = total

    def _one_hot_prefix(self, tokens: torch.Tensor, j: int) -> torch.Tensor:
        x = torch.zeros(tokens.shape[0], self.total, device=tokens.device)
        for i in range(j):
            x[torch.arange(tokens.shape[0]), self.offsets[i] + tokens[:, i]] = 1.0
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
