"""PromQL instant queries (``GET /api/v1/query``) and the Prometheus health probe.

:class:`PrometheusQuery` asks a Prometheus server for the value of a query now and translates
every failure once, at this boundary: no answer, a timeout or a 5xx becomes
:class:`~safe_updater.domain.errors.TransientError`; a query the server refuses (400/422, with
Prometheus's own message) becomes :class:`~safe_updater.domain.errors.InvalidInputError`.
:class:`PrometheusProbe` turns a :class:`~safe_updater.domain.health.PrometheusCheck` into samples:
it never raises, an unreachable server or a bad query is a failing sample that says why.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import httpx

from safe_updater.domain.errors import (
    InvalidInputError,
    PermanentError,
    SafeUpdaterError,
    TransientError,
)
from safe_updater.domain.health import PrometheusCheck, Sample

_MAX_DETAIL = 200


class PrometheusQuery:
    """A client for one Prometheus server's instant-query API."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 5.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._url = url.rstrip("/")
        self._timeout = timeout
        self._client = httpx.Client(
            timeout=timeout,
            follow_redirects=False,
            trust_env=False,  # no proxies from the environment
            transport=transport,
        )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> PrometheusQuery:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def values(self, query: str) -> list[float]:
        """The query's value now: one float per series of an instant vector, or the scalar.

        An empty vector gives ``[]``. NaN and ±Inf are returned as floats (the caller judges).
        """
        params = {"query": query, "timeout": f"{self._timeout:g}s"}
        try:
            response = self._client.get(self._url + "/api/v1/query", params=params)
        except httpx.TimeoutException as exc:
            raise TransientError(
                f"Prometheus at {self._url} did not answer within {self._timeout:g}s"
            ) from exc
        except httpx.HTTPError as exc:
            raise TransientError(
                f"Prometheus at {self._url} is unreachable: {_short(exc)}",
                hint="check the check's URL and that Prometheus runs",
            ) from exc
        body = _json(response)
        if response.status_code in (400, 422):
            raise InvalidInputError(
                f"Prometheus refused the query {query[:100]!r}: {_error_text(body, response)}",
                hint="try the query in the Prometheus UI",
                field="query",
            )
        if response.status_code >= 500 or response.status_code == 429:
            raise TransientError(
                f"Prometheus at {self._url} answered HTTP {response.status_code}: "
                f"{_error_text(body, response)}"
            )
        if response.status_code != 200 or not isinstance(body, dict):
            raise PermanentError(
                f"Prometheus at {self._url} answered HTTP {response.status_code}: "
                f"{_error_text(body, response)}",
                hint="is the URL the Prometheus server's base URL (http://HOST:9090)?",
            )
        if body.get("status") != "success":
            raise InvalidInputError(
                f"Prometheus refused the query {query[:100]!r}: {_error_text(body, response)}",
                field="query",
            )
        return _parse_result(body.get("data"), self._url)


def _parse_result(data: Any, url: str) -> list[float]:
    if not isinstance(data, dict):
        raise PermanentError(f"Prometheus at {url} sent a result without data")
    kind = data.get("resultType")
    result: Any = data.get("result")
    try:
        if kind == "scalar":
            return [_number(result)]
        if kind == "vector" and isinstance(result, list):
            return [_number(series["value"]) for series in result]
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise PermanentError(f"Prometheus at {url} sent a malformed {kind} result") from exc
    raise InvalidInputError(
        f"the query returned a {kind}, not a number",
        hint="a health query must return an instant vector or a scalar, not a range",
        field="query",
    )


def _number(pair: Any) -> float:
    """``[<unix time>, "<value>"]`` -> float; Prometheus writes NaN and ±Inf as text."""
    _, text = pair
    return float(str(text))


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _error_text(body: Any, response: httpx.Response) -> str:
    if isinstance(body, dict) and body.get("error"):
        return str(body["error"])[:_MAX_DETAIL]
    return (response.text or response.reason_phrase or "no body")[:_MAX_DETAIL]


def _short(exc: Exception) -> str:
    return (str(exc) or type(exc).__name__)[:_MAX_DETAIL]


class PrometheusProbe:
    """Samples a :class:`PrometheusCheck`: passes while the value is on the healthy side.

    * server unreachable / timeout / 5xx: a failing sample saying so (a monitoring outage during
      the window counts against the update, as it does in Argo Rollouts' analysis);
    * a query Prometheus refuses: a failing sample with Prometheus's message;
    * an empty result: ``ok=None`` ("no data yet"): neither a pass nor a failure;
    * NaN: a failure.
    """

    def __init__(self, spec: PrometheusCheck, *, transport: httpx.BaseTransport | None = None):
        self._spec = spec
        self._query = PrometheusQuery(
            spec.url, timeout=spec.timeout.total_seconds(), transport=transport
        )

    @property
    def name(self) -> str:
        return self._spec.name

    def close(self) -> None:
        self._query.close()

    def check(self, at: datetime) -> Sample:
        try:
            values = self._query.values(self._spec.query)
        except InvalidInputError as exc:
            return self._sample(at, False, f"bad query: {exc.message}")
        except SafeUpdaterError as exc:
            return self._sample(at, False, exc.message)
        ok, detail = self._spec.judge(values)
        return self._sample(at, ok, detail)

    def _sample(self, at: datetime, ok: bool | None, detail: str) -> Sample:
        return Sample(at=at, check=self.name, ok=ok, detail=detail[: _MAX_DETAIL * 2])
