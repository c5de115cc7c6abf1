"""Parsing stays linear in the input: adversarial inputs of size n and 8n, compared.

Quadratic behaviour (a regex retried from every position, a scan restarted per separator) shows
as ~64x for 8x the input; linear as ~8x. Each case asserts less than 20x, with a floor for tiny
timings and retries for a loaded machine (see fuzzing.assert_linear); no absolute limits.
Inputs the parser refuses early (tags over 128 characters, durations over 64) are fine too:
refusing must be linear as well.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from fuzzing import assert_linear

from safe_updater.adapters import helm_models as helm
from safe_updater.adapters import registry_wire as wire
from safe_updater.adapters.registry_auth import parse_retry_after, parse_www_authenticate
from safe_updater.config import check_config_text
from safe_updater.domain.durations import parse_duration
from safe_updater.domain.patterns import matches, parse_pin, validate_pattern
from safe_updater.domain.policy import policy_from_labels
from safe_updater.domain.versions import parse_tag, rank_candidates
from safe_updater.domain.windows import parse_windows

HOST = "registry.example.test"
BASE = httpx.URL(f"https://{HOST}/v2/")
PATH = "/v2/team/app/tags/list"


def _link(header: str) -> object:
    answer = wire.Reply("GET", BASE.join(PATH), 200, httpx.Headers({"Link": header}), b"")
    return wire.next_page_url(answer, BASE, PATH, HOST)


def _body(text: str) -> wire.Reply:
    return wire.Reply("GET", BASE.join(PATH), 200, httpx.Headers(), text.encode())


def _www(header: str) -> object:
    try:
        return parse_www_authenticate(header)
    except ValueError:
        return None  # its documented refusal; the adapter turns it into RegistryAuthError


def _label(key: str) -> Callable[[str], object]:
    return lambda value: policy_from_labels({key: value}, asset_id="docker:local/app")


# (name, parse, make(n), n): make builds the adversarial input of size ~n.
CASES: list[tuple[str, Callable[[Any], object], Callable[[int], Any], int]] = [
    # tags: long runs of separators and digits, refused or read in one pass
    ("tag a*n!", parse_tag, lambda n: "a" * n + "!", 20_000),
    ("tag dashes", parse_tag, lambda n: "1" + "-" * n, 20_000),
    ("tag dots", parse_tag, lambda n: "1" + "." * n, 20_000),
    ("tag digits", parse_tag, lambda n: "1" * n, 20_000),
    (
        "tag list",
        lambda tags: rank_candidates("1.0.0", tags),
        lambda n: [f"1.{i}.0-rc.{i}" for i in range(n)],
        300,
    ),
    # label values, windows, durations, pins, patterns
    ("allow label", _label("safe-updater.io/allow"), lambda n: "re:[0-9]+," * n, 400),
    ("deny globs", _label("safe-updater.io/deny"), lambda n: "*-a," * n, 400),
    ("approvers", _label("safe-updater.io/approval.approvers"), lambda n: "a," * n, 5_000),
    ("window label", _label("safe-updater.io/window"), lambda n: "22:00-02:00;" * n, 50),
    ("windows", parse_windows, lambda n: "mon-fri 22:00-02:00 UTC;" * n, 50),
    ("window junk", parse_windows, lambda n: ("1" * n) + "-" + ":" * n, 5_000),
    ("duration", parse_duration, lambda n: "1h" * n, 5_000),
    ("pin", parse_pin, lambda n: "~" + "1." * n, 5_000),
    ("pattern", validate_pattern, lambda n: "re:" + "(" * n, 5_000),
    ("glob match", lambda p: matches(p, "a" * 127 + "b"), lambda n: "*a" * min(n, 120), 15),
    # registry answers
    ("link params", _link, lambda n: f"<{PATH}?n=1>" + '; a="x"' * n + '; rel="next"', 2_000),
    ("link many", _link, lambda n: ", ".join(f"<{PATH}?p={i}>; rel=prev" for i in range(n)), 500),
    ("link junk", _link, lambda n: "<" * n, 5_000),
    ("challenge", _www, lambda n: "Bearer " + ",".join(f'k{i}="v"' for i in range(n)), 1_000),
    ("challenge quotes", _www, lambda n: 'Bearer realm="' + "\\a" * n, 5_000),
    ("retry-after", parse_retry_after, lambda n: "1" * min(n, 4000) + "x" * n, 2_000),
    (
        "tags body",
        lambda b: wire.tags_page(_body(b), HOST, "r"),
        lambda n: '{"tags": [' + ",".join(['"1.0"'] * n) + "]}",
        5_000,
    ),
    (
        "created",
        lambda t: wire.created_field(t, HOST, "m"),
        lambda n: "2024-01-01T00:00:00." + "1" * n,
        5_000,
    ),
    # helm output and errors
    (
        "helm json",
        lambda t: helm.parse_json_output(t, "helm list"),
        lambda n: "Pulled: x\n" * n + "[]",
        2_000,
    ),
    ("helm redact", helm.redact, lambda n: "a" * n, 20_000),
    ("helm message", helm.helm_message, lambda n: "Error: " + "x://a:" * n, 5_000),
    (
        "helm chart 404",
        lambda t: helm.translate_error(t, "helm"),
        lambda n: "FetchReference" * n,
        2_000,
    ),
    (
        "helm repo 404",
        lambda t: helm.translate_error(t, "helm"),
        lambda n: "repository name (" * n,
        2_000,
    ),
    (
        "helm fetch 404",
        lambda t: helm.translate_error(t, "helm"),
        lambda n: "not a valid chart repository or cannot be reached: failed to fetch " * n,
        500,
    ),
    ("split chart", helm.split_chart, lambda n: "a-1.1.1" * n + "!", 5_000),
    ("helm version", helm.HelmVersion.parse, lambda n: "v1.1" * n, 5_000),
    # config: long scalars and long flat lists
    (
        "config list",
        lambda t: check_config_text(t, source="c"),
        lambda n: "policy:\n  default:\n    deny:\n" + "    - '*-a'\n" * n,
        200,
    ),
]


@pytest.mark.parametrize(("name", "parse", "make", "n"), CASES, ids=[c[0] for c in CASES])
def test_parsing_time_is_linear_in_the_input(
    name: str, parse: Callable[[Any], object], make: Callable[[int], Any], n: int
) -> None:
    assert_linear(parse, make, n=n, what=name)


def test_a_regex_label_that_would_backtrack_polynomially_is_refused() -> None:
    # a*a*a*a*a*b on a 127-character tag took 2 s (n**5); now refused when the label is read.
    for pattern in ["re:a*a*a*a*a*b", "re:" + "a?" * 24 + "a" * 24, "re:.*.*.*.*.*.*="]:
        with pytest.raises(Exception, match="too many variable repeats") as raised:
            policy_from_labels({"safe-updater.io/deny": pattern}, asset_id="docker:local/app")
        assert "safe-updater.io/deny" in str(raised.value)
    for pattern in ["re:[0-9]+\\.[0-9]+\\.[0-9]+", "re:.*-rc[0-9]*", "re:v?[0-9]+(\\.[0-9])?"]:
        assert validate_pattern(pattern) == pattern
