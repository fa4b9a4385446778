"""The realignment module of Surgery / SurgeryV2: Φ(z) = W_up · ReLU(W_down · z), applied as z ← z − Φ(z).

W_down is Kaiming-uniform, W_up is zero, so a fresh adapter is exactly the identity (training starts
from the merged model). No biases; rank r (default 16) sets its size: 2·r·width parameters.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class Adapter(nn.Module):
    def __init__(self, width: int, rank: int = 16) -> None:
        super().__init__()
        if rank < 1 or width < 1:
            raise ValueError(f"adapter needs width >= 1 and rank >= 1, got width={width}, rank={rank}")
        self.down = nn.Linear(width, rank, bias=False)
        self.up = nn.Linear(rank, width, bias=False)
        nn.init.kaiming_uniform_(self.down.weight, a=5**0.5)
        nn.init.zeros_(self.up.weight)

    def forward(self, z: Tensor) -> Tensor:
        return z - self.up(F.relu(self.down(z)))
