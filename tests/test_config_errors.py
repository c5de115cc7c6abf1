"""Every config problem names file, line and dotted field; unknown keys suggest the right one."""

from __future__ import annotations

from pathlib import Path

import pytest

from safe_updater.config import (
    ConfigProblems,
    check_config_text,
    load_config_file,
)
from safe_updater.domain.errors import ConfigError

SOURCE = "safe-updater.yaml"


def problems(text: str) -> list[str]:
    config, found = check_config_text(text, source=SOURCE)
    assert config is None and found
    return [str(problem) for problem in found]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "state:\n  url: null\n\npolicy:\n  default:\n    patch: auto\n    minor: sometimes\n",
            "safe-updater.yaml:7: policy.default.minor: must be one of auto, approve, skip",
        ),
        (
            "policy:\n  default:\n    minr: approve\n",
            "safe-updater.yaml:3: policy.default.minr: unknown key 'minr'; did you mean 'minor'?",
        ),
        ("polcy: {}\n", "safe-updater.yaml:1: polcy: unknown key 'polcy'; did you mean 'policy'?"),
        (
            "health:\n  window: 30s\n  interval: soon\n",
            "safe-updater.yaml:3: health.interval: 'soon' is not a duration; "
            "write durations like 90s, 5m, 1h30m or 2d",
        ),
        (
            "health:\n  window: 5s\n  interval: 10s\n",
            "safe-updater.yaml:1: health: interval must not be longer than window",
        ),
        (
            "policy:\n  overrides:\n    - match: {kind: helm}\n      minor: skip\n"
            "    - match: {kind: vm}\n",
            "safe-updater.yaml:5: policy.overrides[1].match.kind: must be one of docker, k8s, helm",
        ),
        (
            "policy:\n  overrides:\n    - minor: skip\n",
            "safe-updater.yaml:3: policy.overrides[0].match: is required",
        ),
        (
            "policy:\n  default:\n    approval:\n      quorum: 0\n",
            "safe-updater.yaml:4: policy.default.approval.quorum: must be at least 1",
        ),
        (
            "policy:\n  default:\n    approval:\n      timeout_action: wait\n",
            "safe-updater.yaml:4: policy.default.approval.timeout_action: "
            "must be one of reject, approve",
        ),
        (
            "policy:\n  default:\n    windows: ['25:00-26:00']\n",
            "safe-updater.yaml:3: policy.default.windows[0]: '25:00' is not a time of day HH:MM",
        ),
        (
            "policy:\n  default:\n    deny: ['re:(a+)+']\n",
            "safe-updater.yaml:3: policy.default.deny[0]: tag pattern 're:(a+)+' repeats a group",
        ),
        (
            "policy:\n  default:\n    pin: '~banana'\n",
            "safe-updater.yaml:3: policy.default.pin: pin '~banana' is not a version range",
        ),
        (
            "targets:\n  docker:\n    - name: local\n      url: unix:///x\n    - name: local\n"
            "      url: unix:///y\n",
            "safe-updater.yaml:2: targets.docker: target names must be unique: local",
        ),
        (
            "targets:\n  docker:\n    - url: unix:///x\n",
            "safe-updater.yaml:3: targets.docker[0].name: is required",
        ),
        (
            "registries:\n  - host: https://ghcr.io\n",
            "safe-updater.yaml:2: registries[0].host: must be a host[:port]",
        ),
        (
            "rollback:\n  max_rollbacks: many\n",
            "safe-updater.yaml:2: rollback.max_rollbacks: must be a whole number",
        ),
        (
            "targets:\n  docker:\n    - {name: a, url: 'tcp://h:2376', tls: {client_cert: c}}\n",
            "safe-updater.yaml:3: targets.docker[0].tls: client_cert and client_key go together",
        ),
        ("assets: [1, 2]\n", "safe-updater.yaml:1: assets: must be a mapping of keys"),
        (
            "policy:\n  default:\n    minor: auto\n    minor: skip\n",
            "safe-updater.yaml:4: policy.default.minor: duplicate key 'minor'",
        ),
        ("- a\n- b\n", "safe-updater.yaml: the file must be a mapping of sections"),
        ("policy: {default: [\n", "safe-updater.yaml:2: not valid YAML"),
    ],
)
def test_error_names_file_line_and_field(text: str, expected: str) -> None:
    assert any(problem.startswith(expected) for problem in problems(text)), problems(text)


def test_inline_password_is_refused_with_block_hint() -> None:
    found = problems("registries:\n  - host: ghcr.io\n    username: me\n    password: hunter2\n")
    secret = next(p for p in found if "password" in p)
    assert secret.startswith("safe-updater.yaml:4: registries[0].password: inline secrets")
    assert "Block" in secret and "credentials_block" in secret
    assert "hunter2" not in " ".join(found)
    # the other key is still reported: one run lists every problem
    assert any("registries[0].username: unknown key" in p for p in found)


def test_problems_are_sorted_by_line_and_all_reported() -> None:
    text = "policy:\n  default:\n    minor: x\n    major: y\nhealth:\n  window: z\n"
    lines = [p.split(":")[1] for p in problems(text)]
    assert lines == ["3", "4", "6"]


def test_unknown_key_without_close_match_lists_allowed_keys() -> None:
    found = problems("health:\n  zzz: 1\n")
    assert found == [
        "safe-updater.yaml:2: health.zzz: unknown key 'zzz' (fix: allowed here: window, "
        "interval, failure_threshold, success_threshold, timeout)"
    ]


def test_load_raises_one_line_error_counting_all(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("policy:\n  default:\n    minor: x\n    major: y\n")
    with pytest.raises(ConfigProblems) as caught:
        load_config_file(path)
    error = caught.value
    assert isinstance(error, ConfigError)
    assert (error.source, error.line, error.field) == (str(path), 3, "policy.default.minor")
    assert "1 of 2 problems" in str(error)
    assert "\n" not in str(error)
    assert len(error.problems) == 2


def test_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "binary.yaml"
    path.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(ConfigError, match="cannot read"):
        load_config_file(path)
