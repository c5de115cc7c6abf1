"""Fleet plans: which assets update, in which wave, and when a wave's failures halt the rest.

Pure: the fleet flow gives it the scan's rows and the time, and runs what it returns. Waves
follow groups (label ``safe-updater.io/group`` or the config's ``assets.<glob>.group``): each
canary group is a wave of its own and goes first, then the other groups in the configured
order, then the rest alphabetically, then the assets without a group. A canary's failure
halts everything after it, whatever the budget, because a canary exists to catch exactly that.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

UNGROUPED = "(no group)"

# Outcomes of update_asset that count against a wave's failure budget.
FAILED_OUTCOMES = frozenset({"rolled_back", "failed", "crashed"})


class Disposition(StrEnum):
    """What the fleet run does with one asset."""

    UPDATE = "update"  # applied in its wave without asking
    APPROVE = "approve"  # applied in its wave once approved
    WAIT = "wait for window"  # its window opens soon: the wave waits for it
    DEFER = "deferred"  # its window opens later: the next scheduled run takes it
    NONE = "no update"
    ERROR = "error"  # could not be planned; the reasons say why


@dataclass(frozen=True)
class FleetItem:
    """One row of the scan's plan, with the asset's group."""

    asset: str
    current: str | None
    target: str | None
    change_type: str | None
    action: str | None  # auto | approve | error | None, as the scan plans it
    group: str | None = None
    window_open: bool = True
    next_window: datetime | None = None
    reasons: str = ""

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> FleetItem:
        next_window = row.get("next_window")
        if isinstance(next_window, str):
            next_window = datetime.fromisoformat(next_window)
        action = row.get("action")
        return cls(
            asset=str(row["asset"]),
            current=row.get("current"),
            target=row.get("target"),
            change_type=row.get("change_type"),
            # the scan appends "(waits for window)"; the window fields carry that here
            action=str(action).split(" ", 1)[0] if action else None,
            group=row.get("group") or None,
            window_open=bool(row.get("window_open", True)),
            next_window=next_window,
            reasons=str(row.get("reasons") or ""),
        )


@dataclass(frozen=True)
class PlannedAsset:
    item: FleetItem
    disposition: Disposition
    wave: str | None = None
    start_at: datetime | None = None  # WAIT: when its window opens
    note: str = ""


@dataclass(frozen=True)
class Wave:
    name: str
    canary: bool
    assets: tuple[PlannedAsset, ...]

    @property
    def asset_ids(self) -> list[str]:
        return [planned.item.asset for planned in self.assets]

    def budget(self, failure_budget: int) -> int:
        return 0 if self.canary else failure_budget


@dataclass(frozen=True)
class FleetPlan:
    waves: tuple[Wave, ...]
    assets: tuple[PlannedAsset, ...]  # every asset, in scan order
    notes: tuple[str, ...] = field(default=())

    @property
    def needs_approval(self) -> list[PlannedAsset]:
        return [p for p in self.assets if p.disposition is Disposition.APPROVE]

    def count(self, disposition: Disposition) -> int:
        return sum(1 for p in self.assets if p.disposition is disposition)


def plan_fleet(
    items: Sequence[FleetItem],
    *,
    now: datetime,
    canary: Sequence[str] = ("canary",),
    order: Sequence[str] = (),
    window_wait: timedelta = timedelta(0),
    groups: Iterable[str] | None = None,
) -> FleetPlan:
    """Dispose of every item and put the ones that update into waves.

    ``groups`` limits the run to those groups (``(no group)`` names the ungrouped assets);
    the others are planned as no update with that reason.
    """
    only = set(groups) if groups is not None else None
    planned: list[PlannedAsset] = []
    for item in items:
        group = item.group or UNGROUPED
        if only is not None and group not in only:
            planned.append(
                PlannedAsset(item, Disposition.NONE, note=f"group {group} is not in this run")
            )
            continue
        planned.append(_dispose(item, now=now, window_wait=window_wait))

    by_group: dict[str, list[PlannedAsset]] = {}
    for entry in planned:
        if entry.disposition in (Disposition.UPDATE, Disposition.APPROVE, Disposition.WAIT):
            by_group.setdefault(entry.item.group or UNGROUPED, []).append(entry)

    waves: list[Wave] = []
    for name in _wave_order(by_group, canary, order):
        members = tuple(replace(entry, wave=name) for entry in by_group[name])
        waves.append(Wave(name=name, canary=name in canary, assets=members))
    wave_of = {p.item.asset: p for wave in waves for p in wave.assets}
    return FleetPlan(
        waves=tuple(waves),
        assets=tuple(wave_of.get(p.item.asset, p) for p in planned),
    )


def _dispose(item: FleetItem, *, now: datetime, window_wait: timedelta) -> PlannedAsset:
    if item.action == "error":
        return PlannedAsset(item, Disposition.ERROR, note="could not be planned")
    if not item.target or item.action not in ("auto", "approve"):
        return PlannedAsset(item, Disposition.NONE)
    disposition = Disposition.APPROVE if item.action == "approve" else Disposition.UPDATE
    if item.window_open:
        return PlannedAsset(item, disposition)
    opens = item.next_window
    if opens is not None and opens - now <= window_wait:
        return PlannedAsset(
            item,
            Disposition.WAIT,
            start_at=opens,
            note=f"outside its maintenance window; waits until {opens.isoformat()}"
            + (" (then needs approval)" if disposition is Disposition.APPROVE else ""),
        )
    when = f"opens {opens.isoformat()}" if opens is not None else "has no next opening"
    return PlannedAsset(
        item,
        Disposition.DEFER,
        note=f"outside its maintenance window ({when}, beyond the fleet's window_wait "
        f"of {_text(window_wait)}); deferred to the next scheduled run",
    )


def _wave_order(
    by_group: Mapping[str, list[PlannedAsset]], canary: Sequence[str], order: Sequence[str]
) -> list[str]:
    ordered = [g for g in canary if g in by_group]
    ordered += [g for g in order if g in by_group and g not in ordered]
    rest = sorted(g for g in by_group if g not in ordered and g != UNGROUPED)
    ordered += rest
    if UNGROUPED in by_group and UNGROUPED not in ordered:
        ordered.append(UNGROUPED)
    return ordered


def needs_approval(planned: PlannedAsset) -> bool:
    """An APPROVE asset, or a WAIT asset whose scan action is approve."""
    return planned.disposition is Disposition.APPROVE or (
        planned.disposition is Disposition.WAIT and planned.item.action == "approve"
    )


def wave_halt_reason(wave: Wave, outcomes: Mapping[str, str], failure_budget: int) -> str | None:
    """Why the waves after ``wave`` must not run, or None when its failures fit the budget."""
    failed = sorted(a for a, outcome in outcomes.items() if outcome in FAILED_OUTCOMES)
    allowed = wave.budget(failure_budget)
    if len(failed) <= allowed:
        return None
    kind = "canary wave" if wave.canary else "wave"
    return (
        f"{kind} {wave.name}: {len(failed)} of {len(wave.assets)} updates failed or rolled "
        f"back ({', '.join(failed)}), more than its failure budget of {allowed}; "
        "the remaining waves were not started"
    )


def _text(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds % 3600 == 0 and seconds:
        return f"{seconds // 3600}h"
    if seconds % 60 == 0 and seconds:
        return f"{seconds // 60}m"
    return f"{seconds}s"
