"""The policy gate: what may be applied to an asset now, what waits for a person, and why.

A policy is resolved per asset in layers, each later one overriding the keys it sets:

1. ``policy.default`` in the config file;
2. ``policy.overrides`` that match the asset, from the least to the most specific tier:
   ``kind`` only, then ``namespace``/``group``, then ``name``/``asset``. Within a tier the first
   matching override in the file wins, so an asset override beats a namespace override wherever
   each is written;
3. the asset's own labels/annotations (``safe-updater.io/policy.minor: auto``, ...).

:func:`decide` then judges every tag: the version rules (:mod:`~safe_updater.domain.versions`:
no downgrades, same scheme and suffix), the action for its change type, deny/allow patterns, the
pin, quarantine and the minimum release age. ``auto_target`` is the newest tag that may be
applied without a person; ``approval_target`` the newest tag that needs approval *and* is newer
than ``auto_target``, so a patch goes out tonight while a minor waits for a click.
"""

from __future__ import annotations

import difflib
from collections.abc import Collection, Iterable, Mapping
from datetime import datetime, timedelta
from enum import StrEnum
from fnmatch import fnmatchcase
from typing import Annotated, Any, Final, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from safe_updater.domain import labels as keys
from safe_updater.domain.assets import LABEL_PREFIX, Asset, AssetKind
from safe_updater.domain.durations import format_duration, parse_duration
from safe_updater.domain.errors import InvalidInputError
from safe_updater.domain.fields import Duration, WordList, as_value_error
from safe_updater.domain.patterns import Pin, first_match, parse_pin, validate_pattern, validate_pin
from safe_updater.domain.versions import (
    ChangeType,
    ParsedTags,
    Scheme,
    TagVerdict,
    Version,
    parse_tag,
)
from safe_updater.domain.versions import rank_candidates as _rank_candidates
from safe_updater.domain.windows import MaintenanceWindow, any_open, next_opening, parse_windows

DIGEST: Final = "digest"
"""The change type of a new image behind the same tag (``latest`` re-pushed, a rebuilt ``1.25``)."""

ChangeKind = ChangeType | Literal["digest"]

QUARANTINED_REASON: Final = "quarantined after a failed update"
UNKNOWN_AGE_REASON: Final = "release age unknown"


class Action(StrEnum):
    AUTO = "auto"  # apply without a person (inside the maintenance window)
    APPROVE = "approve"  # pause the update until enough approvers say yes
    SKIP = "skip"  # never propose


_STRICTNESS = {Action.AUTO: 0, Action.APPROVE: 1, Action.SKIP: 2}


def stricter(first: Action, second: Action) -> Action:
    """The more cautious of two actions (skip > approve > auto)."""
    return first if _STRICTNESS[first] >= _STRICTNESS[second] else second


def _checked(validate: Any) -> Any:
    """Run one of our validators inside pydantic, turning our error into the ``ValueError``
    pydantic collects (so the config loader can say which line)."""

    def run(value: Any) -> Any:
        try:
            return validate(value)
        except InvalidInputError as error:
            raise as_value_error(error) from None

    return run


TagPattern = Annotated[str, AfterValidator(_checked(validate_pattern))]
"""A glob (``1.2.*``, ``*-alpine``) or ``re:<regex>``, matched against the whole tag."""

PinSpec = Annotated[str, AfterValidator(_checked(validate_pin))]
"""``1.2.3``, ``1.x``, ``1.2.x``, ``~1.2.3``, ``^1.2`` or a non-version tag such as ``stable``."""


def _positive(value: timedelta) -> timedelta:
    if value <= timedelta(0):
        raise ValueError("must be longer than 0s")
    return value


PositiveDuration = Annotated[Duration, AfterValidator(_positive)]


# Why an approval input is refused: the reason recorded in the audit log.
NO_APPROVER_NAME: Final = "no approver name given"
NOT_AN_APPROVER: Final = "not a configured approver"
SELF_APPROVAL: Final = "self-approval is not allowed"


class ApprovalRule(BaseModel):
    """How an update that needs approval is approved."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    quorum: int = Field(default=1, ge=1, le=100, description="Approvals needed.")
    deadline: PositiveDuration = Field(
        default=timedelta(hours=24), description="How long to wait for the approvals."
    )
    timeout_action: Literal["reject", "approve"] = Field(
        default="reject", description="What an unanswered approval becomes at the deadline."
    )
    approvers: WordList = Field(
        default_factory=list, description="Who may approve; empty means anyone."
    )
    allow_self_approval: bool = Field(
        default=True,
        description="May the person who started an update approve it? false: someone else "
        "must (they may still reject it).",
    )

    def refusal(self, who: str, *, approve: bool, requested_by: str | None) -> str | None:
        """Why ``who``'s decision is not accepted (recorded as ``approval.refused``), or None.

        ``requested_by`` is who started the update, if known. Names are compared ignoring case
        and surrounding blanks, so ``Alice`` cannot approve what ``alice`` asked for. Rejecting
        one's own request only withdraws it, so the self-approval rule does not stop that.
        """
        name = who.strip()
        if not name:
            return NO_APPROVER_NAME
        if self.approvers and name not in self.approvers:
            return NOT_AN_APPROVER
        if (
            approve
            and not self.allow_self_approval
            and requested_by is not None
            and name.casefold() == requested_by.strip().casefold()
        ):
            return SELF_APPROVAL
        return None


class ApprovalOverride(BaseModel):
    """Part of an :class:`ApprovalRule`; keys not given keep the value of the layer below."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    quorum: int | None = Field(default=None, ge=1, le=100, description="Approvals needed.")
    deadline: PositiveDuration | None = Field(
        default=None, description="How long to wait for the approvals."
    )
    timeout_action: Literal["reject", "approve"] | None = Field(
        default=None, description="What an unanswered approval becomes at the deadline."
    )
    approvers: WordList | None = Field(
        default=None, description="Who may approve; empty means anyone."
    )
    allow_self_approval: bool | None = Field(
        default=None, description="May the person who started an update approve it?"
    )


class PolicyRules(BaseModel):
    """A complete policy: ``policy.default`` in the config, and the base of every asset's."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    patch: Action = Field(default=Action.AUTO, description="Action for patch updates.")
    minor: Action = Field(default=Action.APPROVE, description="Action for minor updates.")
    major: Action = Field(default=Action.SKIP, description="Action for major updates.")
    prerelease: Action = Field(
        default=Action.SKIP,
        description="Action for pre-releases; also caps any update to a pre-release version.",
    )
    digest: Action = Field(
        default=Action.AUTO, description="Action for a new image behind the same tag."
    )
    approval: ApprovalRule = Field(
        default_factory=ApprovalRule, description="How updates that need approval are approved."
    )
    windows: list[MaintenanceWindow] = Field(
        default_factory=list,
        description="Maintenance windows; updates apply only inside one. Empty: any time.",
    )
    min_release_age: Duration | None = Field(
        default=None, description="Apply a release only once it is this old (e.g. 3d)."
    )
    allow: list[TagPattern] = Field(
        default_factory=list, description="If set, only tags matching one of these patterns."
    )
    deny: list[TagPattern] = Field(
        default_factory=list, description="Never tags matching one of these patterns."
    )
    pin: PinSpec | None = Field(
        default=None, description="Keep to this version or range (1.2.3, 1.x, ~1.2, ^1.2)."
    )


def _kind_alias(value: Any) -> Any:
    # Operators say "kubernetes"; asset ids say "k8s". Accept both.
    if isinstance(value, str) and value.strip().lower() == "kubernetes":
        return AssetKind.KUBERNETES.value
    return value


class OverrideMatch(BaseModel):
    """Which assets an override applies to: every key given must match (globs allowed)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Annotated[AssetKind | None, BeforeValidator(_kind_alias)] = Field(
        default=None, description="docker, kubernetes (k8s) or helm."
    )
    namespace: str | None = Field(default=None, description="Kubernetes namespace (glob).")
    group: str | None = Field(
        default=None, description="The asset's group (label safe-updater.io/group; glob)."
    )
    name: str | None = Field(
        default=None, description="Container, workload or release name (glob)."
    )
    asset: str | None = Field(
        default=None, description="Asset id (glob), e.g. 'docker:*/web' or 'helm:prod/*/api'."
    )

    @model_validator(mode="after")
    def _not_empty(self) -> OverrideMatch:
        if not self.model_fields_set:
            raise ValueError(
                "an override needs at least one of kind, namespace, group, name, asset; "
                "settings for every asset belong in policy.default"
            )
        return self

    @property
    def tier(self) -> int:
        """Specificity: 3 for name/asset, 2 for namespace/group, 1 for kind only."""
        if self.asset is not None or self.name is not None:
            return 3
        if self.namespace is not None or self.group is not None:
            return 2
        return 1

    def matches(self, ctx: AssetContext) -> bool:
        if self.kind is not None and ctx.kind is not self.kind:
            return False
        pairs = (
            (self.namespace, ctx.namespace),
            (self.group, ctx.group),
            (self.name, ctx.name),
            (self.asset, ctx.asset_id),
        )
        return all(
            pattern is None or (value is not None and fnmatchcase(value, pattern))
            for pattern, value in pairs
        )

    def describe(self) -> str:
        parts = [f"{key}={getattr(self, key)}" for key in ("kind", "namespace", "group", "name")]
        parts.append(f"asset={self.asset}")
        return ", ".join(part for part in parts if not part.endswith("=None"))


class PolicyOverride(BaseModel):
    """Policy keys for the assets ``match`` selects; keys not given come from the layer below."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    match: OverrideMatch = Field(description="Which assets this override applies to.")
    patch: Action | None = Field(default=None, description="Action for patch updates.")
    minor: Action | None = Field(default=None, description="Action for minor updates.")
    major: Action | None = Field(default=None, description="Action for major updates.")
    prerelease: Action | None = Field(default=None, description="Action for pre-releases.")
    digest: Action | None = Field(default=None, description="Action for a new digest.")
    approval: ApprovalOverride | None = Field(default=None, description="Approval keys to change.")
    windows: list[MaintenanceWindow] | None = Field(
        default=None, description="Replaces the maintenance windows ([] for any time)."
    )
    min_release_age: Duration | None = Field(
        default=None, description="Replaces the minimum release age (null for none)."
    )
    allow: list[TagPattern] | None = Field(default=None, description="Replaces the allow list.")
    deny: list[TagPattern] | None = Field(default=None, description="Replaces the deny list.")
    pin: PinSpec | None = Field(default=None, description="Replaces the pin (null for none).")


class PolicyConfig(BaseModel):
    """The ``policy`` section of the config file."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    default: PolicyRules = Field(
        default_factory=PolicyRules, description="The policy of every asset."
    )
    overrides: list[PolicyOverride] = Field(
        default_factory=list,
        description="Per kind, namespace, group or asset; the most specific match wins.",
    )


class EffectivePolicy(PolicyRules):
    """One asset's policy after every layer; ``sources`` says which layers made it."""

    sources: list[str] = Field(default_factory=lambda: ["default"])

    @property
    def allow_prerelease(self) -> bool:
        return self.prerelease is not Action.SKIP

    def action_for(self, change: ChangeKind) -> Action:
        """The configured action for a change type (downgrades and the like are never wanted)."""
        if change == DIGEST or change is ChangeType.BUILD:
            # Same version, different bits: the same trust as a re-pushed tag.
            return self.digest
        mapping = {
            ChangeType.PATCH: self.patch,
            ChangeType.MINOR: self.minor,
            ChangeType.MAJOR: self.major,
            ChangeType.PRERELEASE: self.prerelease,
        }
        return mapping.get(ChangeType(change), Action.SKIP)


class AssetContext(BaseModel):
    """What the policy needs to know about an asset."""

    model_config = ConfigDict(frozen=True)

    asset_id: str
    kind: AssetKind
    namespace: str | None = None
    group: str | None = None
    name: str
    labels: dict[str, str] = Field(default_factory=dict)

    @classmethod
    def from_asset(cls, asset: Asset, *, group: str | None = None) -> AssetContext:
        """From an inventory asset; ``group`` (e.g. from the config) wins over its label."""
        return cls(
            asset_id=asset.id,
            kind=asset.kind,
            namespace=asset.namespace,
            group=group or asset.group,
            name=asset.name,
            labels=dict(asset.labels),
        )


def resolve_policy(
    config: PolicyConfig, ctx: AssetContext, *, source: str = "labels"
) -> EffectivePolicy:
    """The policy for one asset: default, then matching overrides, then the asset's labels.

    ``source`` names where the labels came from in error messages ("labels", "annotations").
    Raises :class:`InvalidInputError` naming the label, the asset and the fix for a bad label.
    """
    values: dict[str, Any] = {
        name: getattr(config.default, name) for name in PolicyRules.model_fields
    }
    sources = ["default"]
    for tier in (1, 2, 3):
        for index, override in enumerate(config.overrides):
            if override.match.tier == tier and override.match.matches(ctx):
                _apply(values, override, override.model_fields_set - {"match"})
                sources.append(f"override #{index + 1} ({override.match.describe()})")
                break  # first match wins within a tier
    label_values = policy_from_labels(ctx.labels, asset_id=ctx.asset_id, source=source)
    if label_values:
        approval = label_values.pop("approval", None)
        values.update(label_values)
        if approval:
            values["approval"] = values["approval"].model_copy(update=approval)
        sources.append(source)
    return EffectivePolicy.model_validate({**values, "sources": sources})


def _apply(values: dict[str, Any], override: PolicyOverride, names: set[str]) -> None:
    for name in names:
        value = getattr(override, name)
        if name == "approval":
            if value is not None:
                update = {key: getattr(value, key) for key in value.model_fields_set}
                values["approval"] = values["approval"].model_copy(update=update)
            continue
        if value is None and name not in ("pin", "min_release_age"):
            continue  # an explicit null only means "none" where none is a value
        values[name] = value


_LABEL_KEYS = tuple(keys.POLICY_KEYS)


def policy_from_labels(
    labels: Mapping[str, str], *, asset_id: str, source: str = "labels"
) -> dict[str, Any]:
    """The policy keys an asset's labels set, parsed; raises on a bad value or a mistyped key."""
    out: dict[str, Any] = {}
    approval: dict[str, Any] = {}
    for key, raw in labels.items():
        if (
            not key.startswith((keys.POLICY_PREFIX, keys.APPROVAL_PREFIX))
            and key not in _LABEL_KEYS
        ):
            continue
        value = raw.strip()

        def bad(problem: str, fix: str, key: str = key, raw: str = raw) -> InvalidInputError:
            return InvalidInputError(
                f"{problem} (value {raw[:80]!r} in the {source} of {asset_id})",
                hint=fix,
                field=key,
            )

        if key not in _LABEL_KEYS:
            close = difflib.get_close_matches(key, _LABEL_KEYS, n=1)
            fix = f"did you mean {close[0]}?" if close else "see docs/configuration.md for the keys"
            raise bad("unknown policy label", fix)
        if key.startswith(keys.POLICY_PREFIX):
            try:
                out[key.removeprefix(keys.POLICY_PREFIX)] = Action(value.lower())
            except ValueError:
                raise bad(
                    "must be one of auto, approve, skip", f"set {key} to auto, approve or skip"
                ) from None
        elif key == keys.APPROVAL_QUORUM:
            if not value.isdigit() or not 1 <= int(value) <= 100:
                raise bad("must be a whole number from 1 to 100", f"set {key} to e.g. 2")
            approval["quorum"] = int(value)
        elif key == keys.APPROVAL_DEADLINE:
            approval["deadline"] = _label_duration(value, bad, key, positive=True)
        elif key == keys.APPROVAL_APPROVERS:
            approval["approvers"] = [part.strip() for part in value.split(",") if part.strip()]
        elif key == keys.APPROVAL_TIMEOUT_ACTION:
            if value.lower() not in ("reject", "approve"):
                raise bad("must be reject or approve", f"set {key} to reject or approve")
            approval["timeout_action"] = value.lower()
        elif key == keys.WINDOW:
            try:
                out["windows"] = parse_windows(value)
            except (InvalidInputError, ValueError) as error:
                detail = error.hint if isinstance(error, InvalidInputError) else str(error)
                raise bad("is not a maintenance window", detail or "see docs") from None
        elif key == keys.MIN_RELEASE_AGE:
            none = value.lower() in ("", "none", "0")
            out["min_release_age"] = None if none else _label_duration(value, bad, key)
        elif key == keys.PIN:
            none = value.lower() in ("", "none")
            if not none:
                try:
                    parse_pin(value)
                except InvalidInputError as error:
                    raise bad(error.message, error.hint or "") from None
            out["pin"] = None if none else value
        elif key in (keys.ALLOW, keys.DENY):
            patterns = [part.strip() for part in value.split(",") if part.strip()]
            for pattern in patterns:
                try:
                    validate_pattern(pattern)
                except InvalidInputError as error:
                    raise bad(error.message, error.hint or "") from None
            out[key.removeprefix(LABEL_PREFIX)] = patterns
    if approval:
        out["approval"] = approval
    return out


def _label_duration(value: str, bad: Any, key: str, *, positive: bool = False) -> timedelta:
    try:
        result = parse_duration(value)
    except InvalidInputError:
        raise bad("is not a duration", f"set {key} to e.g. 90s, 30m, 24h or 3d") from None
    if positive and result <= timedelta(0):
        raise bad("must be longer than 0s", f"set {key} to e.g. 24h")
    return result


class CandidateDecision(BaseModel):
    """One tag, judged: may it be applied, with what action, and why (in words)."""

    model_config = ConfigDict(frozen=True)

    tag: str
    change_type: ChangeKind | None
    accepted: bool
    action: Action | None
    reason: str


class Decision(BaseModel):
    """What to do with one asset now. ``candidates`` lists every tag given, newest usable first."""

    model_config = ConfigDict(frozen=True)

    asset_id: str
    current: str
    auto_target: str | None
    auto_change_type: ChangeKind | None
    approval_target: str | None
    approval_change_type: ChangeKind | None
    candidates: list[CandidateDecision]
    reasons: list[str]
    window_open: bool
    next_window: datetime | None


def decide(
    ctx: AssetContext,
    current: str,
    tags: Iterable[str] | ParsedTags,
    policy: EffectivePolicy,
    *,
    now: datetime,
    quarantined: Collection[str] = (),
    release_times: Mapping[str, datetime] | None = None,
    digest_changed: bool = False,
) -> Decision:
    """Judge every tag for ``ctx`` running ``current`` and pick the targets.

    ``tags`` may be a repository's :class:`ParsedTags`, parsed once and shared by the assets
    that run it. ``now`` must be timezone-aware. ``quarantined`` holds tags (or versions) that
    failed on this asset. ``release_times`` maps tags to when they were published; with a
    minimum release age a tag without one is not applied. ``digest_changed`` says the image
    behind ``current`` changed.
    Raises :class:`InvalidInputError` if ``current`` is not a valid tag.
    """
    ranking = _rank_candidates(
        current, tags, allow_prerelease=policy.allow_prerelease, chart=ctx.kind is AssetKind.HELM
    )
    judge = _Judge(policy, now, quarantined, release_times)
    usable: list[CandidateDecision] = []
    dropped: list[CandidateDecision] = []
    replaced = False  # the current tag's own verdict gives way to the new-digest candidate
    for verdict in ranking.candidates:
        if verdict.accepted:
            usable.append(judge.candidate(verdict))
        elif digest_changed and verdict.tag == current and not replaced:
            replaced = True
        else:
            dropped.append(_dropped(verdict))
    if digest_changed:
        # The same tag with new bits is "older" than any newer version, so it goes last.
        usable.append(judge.digest(current, ranking.current))

    auto_index = next(
        (i for i, c in enumerate(usable) if c.accepted and c.action is Action.AUTO), None
    )
    approval_index = next(
        (i for i, c in enumerate(usable[:auto_index]) if c.accepted and c.action is Action.APPROVE),
        None,
    )
    if auto_index is not None:
        chosen = usable[auto_index].tag
        usable = [
            _superseded(c, chosen) if i > auto_index and c.accepted else c
            for i, c in enumerate(usable)
        ]
    auto = usable[auto_index] if auto_index is not None else None
    approval = usable[approval_index] if approval_index is not None else None

    window_open = any_open(policy.windows, now)
    next_window = None if window_open else next_opening(policy.windows, now)
    reasons = _reasons(
        policy, ranking.current, auto, approval, usable, window_open, next_window, digest_changed
    )
    return Decision(
        asset_id=ctx.asset_id,
        current=current,
        auto_target=auto.tag if auto else None,
        auto_change_type=auto.change_type if auto else None,
        approval_target=approval.tag if approval else None,
        approval_change_type=approval.change_type if approval else None,
        candidates=usable + dropped,
        reasons=reasons,
        window_open=window_open,
        next_window=next_window,
    )


class _Judge:
    """The per-tag checks of :func:`decide`, with the policy's parsed pin and quarantine."""

    def __init__(
        self,
        policy: EffectivePolicy,
        now: datetime,
        quarantined: Collection[str],
        release_times: Mapping[str, datetime] | None,
    ) -> None:
        self.policy = policy
        self.now = now
        self.release_times = release_times
        self.pin: Pin | None = parse_pin(policy.pin) if policy.pin else None
        self.quarantined_tags = set(quarantined)
        self.quarantined_versions: list[Version] = []
        for entry in quarantined:
            try:
                self.quarantined_versions.append(parse_tag(entry))
            except InvalidInputError:
                continue  # not a tag (e.g. a digest): matched by exact text only

    def candidate(self, verdict: TagVerdict) -> CandidateDecision:
        assert verdict.version is not None and verdict.change_type is not None
        change: ChangeKind = verdict.change_type
        action = self.policy.action_for(change)
        why = f"{verdict.reason}; {_action_words(action, change, self.policy)}"
        if verdict.version.is_prerelease and change is not ChangeType.PRERELEASE:
            capped = stricter(action, self.policy.prerelease)
            if capped is not action:
                action = capped
                words = _action_words(action, ChangeType.PRERELEASE, self.policy)
                why = f"{verdict.reason}; a pre-release, so {words}"
        return self._filter(verdict.tag, verdict.version, change, action, why)

    def digest(self, tag: str, version: Version) -> CandidateDecision:
        action = self.policy.action_for(DIGEST)
        why = f"new image behind the same tag {tag!r}; {_action_words(action, DIGEST, self.policy)}"
        return self._filter(tag, version, DIGEST, action, why)

    def _filter(
        self, tag: str, version: Version, change: ChangeKind, action: Action, why: str
    ) -> CandidateDecision:
        def no(reason: str, action: Action | None = None) -> CandidateDecision:
            return CandidateDecision(
                tag=tag, change_type=change, accepted=False, action=action, reason=reason
            )

        if self._is_quarantined(tag, version):
            return no(QUARANTINED_REASON)
        denied_by = first_match(self.policy.deny, tag)
        if denied_by is not None:
            return no(f"denied by pattern {denied_by!r}")
        if self.policy.allow and first_match(self.policy.allow, tag) is None:
            return no("matches no allow pattern (" + ", ".join(self.policy.allow) + ")")
        if self.pin is not None and not self.pin.admits(tag, version):
            return no(f"outside the pin {self.pin.raw!r}")
        if action is Action.SKIP:
            return no(why, Action.SKIP)
        age_problem = self._age_problem(tag)
        if age_problem:
            return no(age_problem)
        return CandidateDecision(
            tag=tag, change_type=change, accepted=True, action=action, reason=why
        )

    def _is_quarantined(self, tag: str, version: Version) -> bool:
        if tag in self.quarantined_tags:
            return True
        if version.scheme is Scheme.DIGEST_ONLY:
            return False
        return any(
            q.family == version.family and q.sort_key == version.sort_key
            for q in self.quarantined_versions
        )

    def _age_problem(self, tag: str) -> str | None:
        minimum = self.policy.min_release_age
        if not minimum:
            return None
        released = (self.release_times or {}).get(tag)
        if released is None:
            return UNKNOWN_AGE_REASON
        age = self.now - released
        if age < minimum:
            shown = format_duration(max(age, timedelta(0)))
            return f"released {shown} ago; the policy waits {format_duration(minimum)}"
        return None


def _action_words(action: Action, change: ChangeKind, policy: EffectivePolicy) -> str:
    noun = "new-digest" if change == DIGEST else str(change)
    if action is Action.AUTO:
        return f"{noun} updates are applied automatically"
    if action is Action.APPROVE:
        rule = policy.approval
        return (
            f"{noun} updates need approval (quorum {rule.quorum}, "
            f"deadline {format_duration(rule.deadline)})"
        )
    return f"{noun} updates are skipped by the policy"


def _dropped(verdict: TagVerdict) -> CandidateDecision:
    return CandidateDecision(
        tag=verdict.tag,
        change_type=verdict.change_type,
        accepted=False,
        action=None,
        reason=verdict.reason,
    )


def _superseded(candidate: CandidateDecision, chosen: str) -> CandidateDecision:
    return candidate.model_copy(
        update={"reason": f"{candidate.reason}; {chosen} is newer and chosen"}
    )


def _reasons(
    policy: EffectivePolicy,
    current: Version,
    auto: CandidateDecision | None,
    approval: CandidateDecision | None,
    usable: list[CandidateDecision],
    window_open: bool,
    next_window: datetime | None,
    digest_changed: bool,
) -> list[str]:
    reasons = [f"policy from {', '.join(policy.sources)}"]
    if auto is not None:
        when = "now" if window_open else "when the maintenance window opens"
        reasons.append(f"apply {auto.tag} {when} ({_change_words(auto.change_type)}, automatic)")
    if approval is not None:
        rule = policy.approval
        who = ", ".join(rule.approvers) if rule.approvers else "anyone"
        reasons.append(
            f"{approval.tag} ({_change_words(approval.change_type)}) waits for approval: "
            f"{rule.quorum} of {who} within {format_duration(rule.deadline)}, "
            f"else {rule.timeout_action}"
        )
    if auto is None and approval is None:
        if not usable:
            if current.scheme is Scheme.DIGEST_ONLY and not digest_changed:
                reasons.append(
                    f"no update: {current.raw!r} is tracked by digest and it has not changed"
                )
            else:
                reasons.append(f"no update: no tag is newer than {current.raw}")
        else:
            reasons.append("no update: every newer tag is held back by the policy (see candidates)")
    if policy.windows:
        names = "; ".join(str(window) for window in policy.windows)
        if window_open:
            reasons.append(f"inside maintenance window ({names})")
        elif next_window is not None:
            at = next_window.isoformat(timespec="minutes")
            reasons.append(f"outside maintenance window; next opens at {at} ({names})")
        else:
            reasons.append(f"outside maintenance window; it never opens ({names})")
    return reasons


def _change_words(change: ChangeKind | None) -> str:
    return "new digest" if change == DIGEST else f"{change} update"


__all__ = [
    "DIGEST",
    "NOT_AN_APPROVER",
    "NO_APPROVER_NAME",
    "QUARANTINED_REASON",
    "SELF_APPROVAL",
    "UNKNOWN_AGE_REASON",
    "Action",
    "ApprovalOverride",
    "ApprovalRule",
    "AssetContext",
    "CandidateDecision",
    "ChangeKind",
    "Decision",
    "EffectivePolicy",
    "MaintenanceWindow",
    "OverrideMatch",
    "PolicyConfig",
    "PolicyOverride",
    "PolicyRules",
    "decide",
    "policy_from_labels",
    "resolve_policy",
    "stricter",
]
