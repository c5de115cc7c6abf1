"""The config loader on bad files: every problem is a ConfigError with file, line and field.

Files are made by mutating the example config (a leaf replaced by junk, a key dropped or added,
a section of the wrong type), by truncating it, and from random text.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from fuzzing import FUZZ, FUZZ_SMALL, json_junk, outcome, scalars, truncated
from hypothesis import given
from hypothesis import strategies as st

from safe_updater.config import AppConfig, ConfigProblems, check_config_text, parse_config_text
from safe_updater.domain.errors import ConfigError

SOURCE = "fuzz.yaml"
EXAMPLE_TEXT = (Path(__file__).parents[2] / "examples" / "safe-updater.yaml").read_text()
EXAMPLE: dict[str, Any] = yaml.safe_load(EXAMPLE_TEXT)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            out += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            out += _paths(item, (*prefix, index))
    return out


PATHS = [path for path in _paths(EXAMPLE) if path]


def _set(data: Any, path: tuple[Any, ...], value: Any, *, delete: bool = False) -> None:
    for part in path[:-1]:
        data = data[part]
    if delete:
        del data[path[-1]]
    else:
        data[path[-1]] = value


@st.composite
def mutated_configs(draw: st.DrawFn) -> str:
    data = copy.deepcopy(EXAMPLE)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(PATHS))
        try:
            action = draw(st.sampled_from(["junk", "scalar", "delete", "extra"]))
            if action == "delete":
                _set(data, path, None, delete=True)
            elif action == "extra":
                parent: Any = data
                for part in path[:-1]:
                    parent = parent[part]
                if isinstance(parent, dict):
                    parent[draw(st.text(min_size=1, max_size=10))] = draw(json_junk)
            else:
                _set(data, path, draw(json_junk if action == "junk" else scalars))
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation removed or replaced that path
    return yaml.safe_dump(data, allow_unicode=True, sort_keys=False)


def _check_problems(text: str, problems: list[ConfigError], *, structured: bool) -> None:
    assert problems, "no config and no problem"
    for problem in problems:
        assert isinstance(problem, ConfigError)
        assert problem.message.strip()
        assert problem.source == SOURCE
        if structured:
            # Valid YAML: every problem is at a line of the file and names its dotted field.
            assert problem.line is not None and 1 <= problem.line <= text.count("\n") + 1, str(
                problem
            )
            assert problem.field or "must be a mapping" in problem.message, str(problem)
            assert str(problem).startswith(f"{SOURCE}:{problem.line}: "), str(problem)


@FUZZ_SMALL
@given(mutated_configs())
def test_mutated_config_gives_a_config_or_located_problems(text: str) -> None:
    result = outcome(lambda: check_config_text(text, source=SOURCE), what="check_config_text")
    assert isinstance(result, tuple), result
    config, problems = result
    if config is not None:
        assert isinstance(config, AppConfig) and problems == []
        return
    _check_problems(text, problems, structured=True)
    # parse_config_text says the same, as one ConfigProblems carrying the first problem
    with pytest.raises(ConfigProblems) as raised:
        parse_config_text(text, source=SOURCE)
    assert [str(p) for p in raised.value.problems] == [str(p) for p in problems]
    assert raised.value.line == problems[0].line and raised.value.field == problems[0].field


@FUZZ
@given(st.data())
def test_truncated_or_random_text_gives_only_config_errors(data: st.DataObject) -> None:
    text = data.draw(
        st.one_of(
            st.just(EXAMPLE_TEXT),
            st.text(max_size=300),
            st.text(alphabet=":-[]{}&*!|>'\"#%@` \n\tab1", max_size=200),
        ),
        label="text",
    )
    if text is EXAMPLE_TEXT:
        text = truncated(EXAMPLE_TEXT, data)
    result = outcome(lambda: check_config_text(text, source=SOURCE), what="check_config_text")
    assert isinstance(result, tuple), result
    config, problems = result
    if config is None:
        _check_problems(text, problems, structured=False)


@FUZZ_SMALL
@given(
    section=st.sampled_from(sorted(AppConfig.model_fields)),
    value=json_junk,
)
def test_a_section_of_any_type_is_refused_at_its_line(section: str, value: Any) -> None:
    text = "# fuzz\n" + yaml.safe_dump({section: value}, allow_unicode=True)
    config, problems = check_config_text(text, source=SOURCE)
    if config is None:
        _check_problems(text, problems, structured=True)
        assert all((p.field or "").startswith(section) for p in problems), problems


def test_deeply_nested_flow_collections_are_a_config_error() -> None:
    config, problems = check_config_text("state: " + "[" * 5000, source=SOURCE)
    assert config is None and problems
    assert all(p.message for p in problems)


def test_alias_bombs_are_refused_quickly() -> None:
    """Nine aliases of nine aliases, nine levels deep: 387 million values if expanded."""
    lines = ['a0: &a0 ["x"]']
    for level in range(1, 10):
        refs = ", ".join(f"*a{level - 1}" for _ in range(9))
        lines.append(f"a{level}: &a{level} [{refs}]")
    lines.append("state: *a9")
    config, problems = check_config_text("\n".join(lines) + "\n", source=SOURCE)
    assert config is None
    assert "expands to more than 100,000 values (YAML aliases)" in problems[0].message
    assert problems[0].source == SOURCE
