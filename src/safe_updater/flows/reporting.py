"""The rows and markdown of an update's run artifact (pure formatting)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from safe_updater.domain.assets import Asset
from safe_updater.domain.plans import UpdateResult
from safe_updater.domain.policy import Decision

if TYPE_CHECKING:
    from safe_updater.tasks.health import HealthReport

_MAX_CANDIDATE_ROWS = 50


def report_rows(
    decision: Decision, report: HealthReport | None, result: UpdateResult
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for candidate in decision.candidates[:_MAX_CANDIDATE_ROWS]:
        rows.append(
            {
                "section": "candidate",
                "item": candidate.tag,
                "value": _text(candidate.change_type),
                "detail": f"{_text(candidate.action)}: {candidate.reason}",
            }
        )
    for sample in report.samples if report else []:
        rows.append(
            {
                "section": "health",
                "item": sample.check,
                "value": "ok" if sample.ok else "fail",
                "detail": f"{sample.at:%H:%M:%S} {sample.detail}",
            }
        )
    rows.append(
        {
            "section": "outcome",
            "item": result.asset,
            "value": result.outcome,
            "detail": "; ".join(result.reasons),
        }
    )
    return rows


def summary_markdown(
    asset: Asset, decision: Decision, report: HealthReport | None, result: UpdateResult
) -> str:
    lines = [
        f"# {asset.id}: {result.outcome}",
        "",
        f"- from **{result.from_version}** to **{result.to_version or '-'}** "
        f"({result.change_type or 'no change'})",
        f"- auto target: {decision.auto_target or '-'}; "
        f"approval target: {decision.approval_target or '-'}",
    ]
    if report is not None:
        failed = sum(1 for s in report.samples if not s.ok)
        lines.append(
            f"- health: {report.verdict.state}, {len(report.samples)} samples, "
            f"{failed} failed: {report.verdict.reason}"
        )
    lines += ["", "## Why", ""] + [f"- {reason}" for reason in result.reasons]
    return "\n".join(lines)


def _text(value: object) -> str:
    return str(getattr(value, "value", value) or "-")
