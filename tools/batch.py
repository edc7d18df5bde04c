"""The batch type every intervention takes.

Task specs (in ``evals``) build it; ``tools`` only consumes it. Prompts in one batch share a length
(task generators produce aligned templates), so a named position is one index per prompt.

>>> import torch
>>> b = TaskBatch(
...     clean_ids=torch.tensor([[1, 2, 3], [1, 4, 3]]),
...     corrupt_ids=torch.tensor([[1, 5, 3], [1, 6, 3]]),
...     answer_ids=torch.tensor([7, 8]),
...     wrong_ids=torch.tensor([8, 7]),
...     positions={"END": torch.tensor([2, 2]), "S2": torch.tensor([1, 1])},
... )
>>> b.size, b.seq_len, b.position("END").tolist()
(2, 3, [2, 2])
>>> b[:1].size
1
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

from tools.errors import BatchError


@dataclass(frozen=True)
class TaskBatch:
    """Clean/corrupt prompts with answers and named positions.

    Shapes: ``clean_ids`` and ``corrupt_ids`` are ``[batch, seq]`` (long); ``answer_ids`` and
    ``wrong_ids`` are ``[batch]`` — the correct next token at the last position (or at the position
    named ``END``) and the token the corrupt prompt favours; ``positions`` maps a role name (``IO``,
    ``S1``, ``S2``, ``END``...) to ``[batch]`` indices.
    """

    clean_ids: torch.Tensor
    corrupt_ids: torch.Tensor | None = None
    answer_ids: torch.Tensor | None = None
    wrong_ids: torch.Tensor | None = None
    positions: dict[str, torch.Tensor] = field(default_factory=dict)
    prompts: list[str] | None = None
    """Optional decoded clean prompts, for reports."""

    def __post_init__(self) -> None:
        ids = self.clean_ids
        if not isinstance(ids, torch.Tensor) or ids.dim() != 2:
            raise BatchError("clean_ids must be a [batch, seq] tensor", fix="stack token ids into a 2-D LongTensor")
        b, t = ids.shape
        if self.corrupt_ids is not None and tuple(self.corrupt_ids.shape) != (b, t):
            raise BatchError(
                f"clean and corrupt prompts differ in shape: {tuple(ids.shape)} vs {tuple(self.corrupt_ids.shape)}",
                fix="build corrupt prompts with the same number of tokens as their clean pairs",
            )
        for name in ("answer_ids", "wrong_ids"):
            v = getattr(self, name)
            if v is not None and tuple(v.shape) != (b,):
                raise BatchError(f"{name} must have shape [{b}], got {tuple(v.shape)}", fix="give one token id per prompt")
        for role, pos in self.positions.items():
            if tuple(pos.shape) != (b,):
                raise BatchError(f"position {role!r} must have shape [{b}], got {tuple(pos.shape)}",
                                 fix="give one index per prompt")
            if len(pos) and (int(pos.min()) < 0 or int(pos.max()) >= t):
                raise BatchError(f"position {role!r} is outside the prompt (length {t})", fix="index tokens from 0")

    @property
    def size(self) -> int:
        return int(self.clean_ids.shape[0])

    @property
    def seq_len(self) -> int:
        return int(self.clean_ids.shape[1])

    @property
    def end(self) -> torch.Tensor:
        """Index of the position whose next-token prediction is scored (``END`` or the last token)."""
        if "END" in self.positions:
            return self.positions["END"]
        return torch.full((self.size,), self.seq_len - 1, dtype=torch.long)

    def position(self, role: str | int) -> torch.Tensor:
        """Indices ``[batch]`` of a named role, or an integer position (negative counts from the end)."""
        if isinstance(role, int):
            idx = role if role >= 0 else self.seq_len + role
            if not 0 <= idx < self.seq_len:
                raise BatchError(f"position {role} is outside the prompt (length {self.seq_len})", fix="index tokens from 0")
            return torch.full((self.size,), idx, dtype=torch.long)
        if role not in self.positions:
            raise BatchError(f"no position named {role!r} in this batch",
                             fix=f"use one of {sorted(self.positions) or ['an integer index']}")
        return self.positions[role]

    def to(self, device: torch.device | str) -> TaskBatch:
        mv = lambda t: None if t is None else t.to(device)  # noqa: E731
        return replace(self, clean_ids=mv(self.clean_ids), corrupt_ids=mv(self.corrupt_ids),
                       answer_ids=mv(self.answer_ids), wrong_ids=mv(self.wrong_ids),
                       positions={k: v.to(device) for k, v in self.positions.items()})

    def __getitem__(self, sl: slice | torch.Tensor) -> TaskBatch:
        take = lambda t: None if t is None else t[sl]  # noqa: E731
        prompts = None
        if self.prompts is not None:
            idx = range(self.size)[sl] if isinstance(sl, slice) else sl.tolist()
            prompts = [self.prompts[i] for i in idx]
        return TaskBatch(clean_ids=self.clean_ids[sl], corrupt_ids=take(self.corrupt_ids),
                         answer_ids=take(self.answer_ids), wrong_ids=take(self.wrong_ids),
                         positions={k: v[sl] for k, v in self.positions.items()}, prompts=prompts)

    def swapped(self) -> TaskBatch:
        """The same batch with clean and corrupt exchanged (answers swapped too)."""
        if self.corrupt_ids is None:
            raise BatchError("this batch has no corrupt prompts to swap", fix="build it with corrupt_ids")
        return replace(self, clean_ids=self.corrupt_ids, corrupt_ids=self.clean_ids,
                       answer_ids=self.wrong_ids, wrong_ids=self.answer_ids, prompts=None)
