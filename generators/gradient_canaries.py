"""White-box Dirac gradient canaries (Steinke, Nasr & Jagielski 2023): gradients of norm
1,000 x clip at one coordinate each, planted with a fair coin in a DP-SGD training
(generators/dp_sgd.py carries them through each step) and scored by the privatised sum."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from audit.core.errors import AuditError
from audit.core.seeding import numpy_rng


@dataclass(eq=False)
class GradientCanaries:
    """m Dirac gradient canaries in one training (see the module docstring), and their scores.

    included: each canary's fair coin (only included canaries are ever inserted). owner: the
    client each canary belongs to (DPD-fVAE: a record belongs to one client), or None for one
    training. scale: the canary's norm before clipping, in units of the clip norm. A correct
    DP-SGD clips it to the clip norm whatever it is; a training that skips clipping lets it
    through 1,000 times larger than a record may be, far above the records' own gradients."""

    included: np.ndarray
    seed: int
    scale: float = 1000.0
    owner: np.ndarray | None = None
    scores: np.ndarray = field(init=False)
    _placed: dict[str, tuple[torch.Tensor, np.ndarray]] = field(init=False, default_factory=dict)
    _signs: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.included = np.asarray(self.included, dtype=bool)
        self.scores = np.zeros(len(self.included))
        self._signs = numpy_rng(self.seed, "gradient-canaries", "signs").choice(
            np.array([-1.0, 1.0]), len(self.included)
        )

    @property
    def m(self) -> int:
        """The number of canaries, inserted or not.

        Returns:
            len(included), >= 0.
        """
        return len(self.included)

    def place(self, host: nn.Module) -> None:
        """Give each canary its coordinate among host's parameters (once, seeded; the same
        parameter names in every later training of a host of that architecture).

        Args:
            host: the module the canaries sit in (the released decoder); one coordinate of its
                parameters per canary, drawn without replacement.

        Raises:
            AuditError: more canaries than host has parameters.
        """
        if self._placed:
            return
        named = [(name, p) for name, p in host.named_parameters()]
        sizes = np.array([p.numel() for _name, p in named])
        if self.m > sizes.sum():
            raise AuditError(
                f"{self.m} gradient canaries need as many parameters; the decoder has "
                f"{int(sizes.sum())} (pass fewer --gradient-canaries)"
            )
        rng = numpy_rng(self.seed, "gradient-canaries", "coordinates")
        flat = rng.choice(int(sizes.sum()), self.m, replace=False)
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        which = np.searchsorted(starts, flat, side="right") - 1
        for index, (name, _p) in enumerate(named):
            ids = np.flatnonzero(which == index)
            local = torch.as_tensor(flat[ids] - starts[index], dtype=torch.long)
            self._placed[name] = (local, ids)

    def assign_owners(self, clients: int) -> None:
        """Each canary to one of `clients` clients, uniformly (seeded).

        Args:
            clients: the number of clients, >= 1; sets `owner` to (m,) int64 in [0, clients).
        """
        rng = numpy_rng(self.seed, "gradient-canaries", "owners")
        self.owner = rng.integers(0, clients, self.m)

    def mine(self, client: int | None) -> np.ndarray:
        """The canaries a training of this client observes (all where there is no owner).

        Args:
            client: the training's client index in [0, clients); None: one central training.

        Returns:
            (m,) bool, True for each canary that training observes.
        """
        if self.owner is None or client is None:
            return np.ones(self.m, dtype=bool)
        return self.owner == client
