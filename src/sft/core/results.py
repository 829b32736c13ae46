"""What a conversion hands on: the rows, the rejects, the funnel and a view of the kept trajectories."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, overload

from sft.core.canonical import Trajectory
from sft.core.turns import TurnLedger


class TrajectoryView(Sequence[Trajectory]):
    """The IM rows as ``Trajectory`` objects, validated on access and never stored.

    Why: an IM row is exactly ``Trajectory.model_dump(mode="json")``, so keeping a pydantic copy of every
    written trajectory next to its LF and IM rows would be a third copy of all text in the parent.
    """

    def __init__(self, im_rows: Sequence[dict[str, Any]]) -> None:
        self._rows = im_rows

    def __len__(self) -> int:
        return len(self._rows)

    @overload
    def __getitem__(self, index: int) -> Trajectory: ...

    @overload
    def __getitem__(self, index: slice) -> list[Trajectory]: ...

    def __getitem__(self, index: int | slice) -> Trajectory | list[Trajectory]:
        if isinstance(index, slice):
            return [Trajectory.model_validate(row) for row in self._rows[index]]
        return Trajectory.model_validate(self._rows[index])

    def __repr__(self) -> str:
        return f"TrajectoryView({len(self._rows)} trajectories)"


@dataclass
class ConversionResult:
    # A Harbor conversion gives ``SpooledRows`` (on disk until written); ready-made datasets give lists.
    lf_rows: Sequence[dict[str, Any]]
    im_rows: Sequence[dict[str, Any]]
    rejects: list[dict[str, Any]]
    funnel: dict[str, Any]
    kept: Sequence[Trajectory]  # the written trajectories (the engine gives a TrajectoryView of im_rows)
    # Per-sample token numbers of exactly lf_rows and how they were counted, set by the over-length node so
    # the report need not tokenize the dataset a second time (sft.pipelines.report.nodes).
    token_samples: dict[str, Any] | None = None
    # The model turns of every trial and the fate of each trajectory (sft.core.turns), so the over-length
    # node can account for the turns it drops or cuts; None for ready-made datasets.
    turn_ledger: TurnLedger | None = None
