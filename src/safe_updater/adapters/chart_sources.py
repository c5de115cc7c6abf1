"""Versions of Helm releases: chart versions from chart repositories, or image tags in values.

The config's ``charts:`` list says where each release's chart comes from (docs/helm.md)::

    charts:
      - {release: "default/web", source: "oci://localhost:5000/charts/web"}
      - {release: "prod/api", source: "https://charts.example.com", chart: "api"}
      - {release: "prod/front", source: "oci://localhost:5000/charts", track: image,
         image: "localhost:5000/demo/web", values_path: "image.tag"}

A release listed there is opted in. Each entry tracks one thing (:class:`Track`):

* ``chart`` (default): the chart's versions. HTTP(S) repositories: ``<source>/index.yaml``
  (httpx, basic auth from the credentials provider for the repository's host, a size cap, parsed
  with ruamel's safe loader); ``entries[chart]`` gives versions, ``created`` and ``digest``.
  OCI repositories: the tags of ``<host>/<path>/<chart>`` through the registry adapter; helm
  stores ``+`` as ``_`` in OCI tags, so tags are read back with ``_`` → ``+``.
* ``image``: an image tag inside the release's values, at ``values_path`` (default ``image.tag``);
  versions are the image's tags in its registry. The image is ``image:`` from the entry, or
  ``<parent of values_path>.repository`` (with ``.registry`` if set) from the release's values.
  An entry with ``values_path`` and no ``track`` tracks the image, as the config documents.

OCI ``source``: with ``chart:``, the chart is ``<source>/<chart>``; without it, ``source`` is the
chart itself when its last path segment is the release's chart name, else ``<source>/<chart>``.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from enum import StrEnum
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from safe_updater.adapters.errors import RegistryAuthError, RegistryUnavailableError
from safe_updater.adapters.helm_models import (
    ChartNotFoundError,
    ChartRef,
    validate_values_path,
)
from safe_updater.adapters.registry import Registry
from safe_updater.adapters.registry_auth import (
    CredentialsProvider,
    basic_auth_header,
    is_loopback_host,
)
from safe_updater.domain.assets import Asset, ImageRef
from safe_updater.domain.errors import InvalidInputError, NotFoundError, SafeUpdaterError

log = logging.getLogger(__name__)

__all__ = ["ChartSources", "ChartSpec", "IndexEntry", "Track", "value_at"]

DEFAULT_VALUES_PATH = "image.tag"
MAX_INDEX_BYTES = 64 * 1024 * 1024
MAX_CHART_BYTES = 32 * 1024 * 1024


class Track(StrEnum):
    CHART = "chart"
    IMAGE = "image"


class ChartSpec(BaseModel):
    """One ``charts:`` entry, resolved: what to track for the matching releases."""

    model_config = ConfigDict(frozen=True)

    release: str = Field(description="<namespace>/<name>, globs allowed.")
    source: str
    chart: str | None = None
    track: Track = Track.CHART
    image: str | None = None
    values_path: str = DEFAULT_VALUES_PATH

    @field_validator("source")
    @classmethod
    def _source(cls, value: str) -> str:
        if not value.startswith(("https://", "http://", "oci://")):
            raise ValueError("must start with https://, http:// or oci://")
        return value.rstrip("/")

    @field_validator("values_path")
    @classmethod
    def _values_path(cls, value: str) -> str:
        return validate_values_path(value)

    @classmethod
    def from_config(cls, entry: Any) -> ChartSpec:
        """From a ``config.ChartSource`` (or a mapping); ``track``/``image`` are optional keys."""
        data = dict(entry) if isinstance(entry, Mapping) else entry.model_dump()
        values_path = data.get("values_path")
        track = data.get("track") or (Track.IMAGE if values_path else Track.CHART)
        try:
            return cls(
                release=data["release"],
                source=data["source"],
                chart=data.get("chart"),
                track=track,
                image=data.get("image"),
                values_path=values_path or DEFAULT_VALUES_PATH,
            )
        except ValidationError as exc:
            raise InvalidInputError(
                f"charts entry for {data.get('release')!r} is invalid: {exc.errors()[0]['msg']}",
                field="charts",
            ) from exc

    def matches(self, namespace: str, release: str) -> bool:
        return fnmatchcase(f"{namespace}/{release}", self.release)

    @property
    def is_oci(self) -> bool:
        return self.source.startswith("oci://")


class IndexEntry(BaseModel):
    """One chart version in an ``index.yaml``."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    version: str
    created: datetime | None = None
    digest: str | None = None
    urls: list[str] = Field(default_factory=list)


def value_at(values: Mapping[str, Any], path: str) -> Any:
    """``values["image"]["tag"]`` for ``image.tag`` (None when absent)."""
    current: Any = values
    for key in path.split("."):
        if not isinstance(current, Mapping) or key not in current:
            return None
        current = current[key]
    return current


class ChartSources:
    """:class:`~safe_updater.adapters.versions.VersionSource` for ``helm:`` assets."""

    def __init__(
        self,
        charts: Sequence[Any],
        registry: Registry,
        *,
        credentials: CredentialsProvider | None = None,
        transport: httpx.BaseTransport | None = None,
        timeout: float = 10.0,
        max_index_bytes: int = MAX_INDEX_BYTES,
        cache_ttl: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.specs = [c if isinstance(c, ChartSpec) else ChartSpec.from_config(c) for c in charts]
        self._registry = registry
        self._credentials = credentials
        self._max_index_bytes = max_index_bytes
        self._cache_ttl = cache_ttl
        self._clock = clock
        self._index: dict[str, tuple[float, dict[str, list[IndexEntry]]]] = {}
        self._client = httpx.Client(
            transport=transport,
            timeout=httpx.Timeout(timeout),
            follow_redirects=True,
            max_redirects=5,
            headers={"User-Agent": "safe-updater"},
        )

    def close(self) -> None:
        self._client.close()

    # -- which source --

    def spec_for(self, namespace: str, release: str) -> ChartSpec | None:
        """The first ``charts:`` entry matching ``namespace/release`` (None: not opted in)."""
        return next((s for s in self.specs if s.matches(namespace, release)), None)

    def spec(self, asset: Asset) -> ChartSpec:
        spec = self.spec_for(asset.namespace or "", asset.name)
        if spec is None:
            raise NotFoundError(
                f"no chart source for {asset.id}",
                hint=f"add {{release: {asset.namespace}/{asset.name}, source: …}} to `charts:`",
            )
        return spec

    def chart_name(self, spec: ChartSpec, release_chart: str | None) -> str:
        name = spec.chart or release_chart
        if not name:
            raise InvalidInputError(f"charts entry {spec.release!r} needs `chart:`", field="charts")
        return name

    def chart_ref(
        self, spec: ChartSpec, chart: str | None, version: str, *, workdir: Path | None = None
    ) -> ChartRef:
        """How helm gets ``chart`` at ``version`` from the entry's source.

        An HTTP repository with credentials is downloaded here (into ``workdir``, checked against
        the index's digest) so the password never goes into helm's argv.
        """
        name = self.chart_name(spec, chart)
        if spec.is_oci:
            ref = spec.source
            if spec.chart or ref.rsplit("/", 1)[-1] != name:
                ref = f"{ref}/{name}"
            return ChartRef(ref=ref, version=version)
        if self._credential_for(spec.source) is None:
            return ChartRef(ref=name, repo=spec.source, version=version)
        if workdir is None:
            raise InvalidInputError(f"{spec.source} needs credentials: pass a workdir to download")
        return ChartRef(ref=str(self._download(spec, name, version, workdir)), version=version)

    def image_of(self, spec: ChartSpec, values: Mapping[str, Any]) -> ImageRef | None:
        """The tracked image with its current tag (``values`` = the release's computed values)."""
        tag = value_at(values, spec.values_path)
        repository = spec.image
        if repository is None:
            parent = spec.values_path.rpartition(".")[0]
            found = value_at(values, f"{parent}.repository" if parent else "repository")
            registry = value_at(values, f"{parent}.registry" if parent else "registry")
            if not isinstance(found, str) or not found:
                return None
            repository = f"{registry}/{found}" if isinstance(registry, str) and registry else found
        if not isinstance(tag, str | int | float) or isinstance(tag, bool) or str(tag) == "":
            return None
        return ImageRef.parse(f"{repository}:{tag}")

    # -- VersionSource --

    def list_versions(self, asset: Asset) -> list[str]:
        spec = self.spec(asset)
        if spec.track is Track.IMAGE:
            return self._registry.list_tags(_image(asset))
        name = self.chart_name(spec, asset.chart)
        if spec.is_oci:
            tags = self._registry.list_tags(self._oci_image(spec, name, None))
            return [tag.replace("_", "+") for tag in tags]
        return [entry.version for entry in self.index_entries(spec.source, name)]

    def digest(self, asset: Asset, version: str) -> str | None:
        spec = self.spec(asset)
        if spec.track is Track.IMAGE:
            return self._registry.digest(_image(asset).with_tag(version))
        name = self.chart_name(spec, asset.chart)
        if spec.is_oci:
            return self._registry.digest(self._oci_image(spec, name, version))
        entry = self._entry(spec, name, version)
        return f"sha256:{entry.digest}" if entry.digest else None

    def created_at(self, asset: Asset, version: str) -> datetime | None:
        spec = self.spec(asset)
        if spec.track is Track.IMAGE:
            return self._registry.created_at(_image(asset).with_tag(version))
        name = self.chart_name(spec, asset.chart)
        if spec.is_oci:
            try:
                return self._registry.created_at(self._oci_image(spec, name, version))
            except SafeUpdaterError as exc:  # a chart's config blob has no `created`
                log.debug("no creation time for %s %s: %s", name, version, exc)
                return None
        return self._entry(spec, name, version).created

    # -- HTTP repositories --

    def index_entries(self, repo_url: str, chart: str) -> list[IndexEntry]:
        """``entries[chart]`` of ``<repo_url>/index.yaml`` (cached for ``cache_ttl`` seconds)."""
        index = self._load_index(repo_url)
        entries = index.get(chart)
        if entries is None:
            raise ChartNotFoundError(
                f"chart {chart!r} is not in {repo_url}/index.yaml",
                hint="check `chart:` of the charts entry",
            )
        return entries

    def _entry(self, spec: ChartSpec, chart: str, version: str) -> IndexEntry:
        for entry in self.index_entries(spec.source, chart):
            if entry.version == version:
                return entry
        raise ChartNotFoundError(f"chart {chart!r} version {version!r} is not in {spec.source}")

    def _load_index(self, repo_url: str) -> dict[str, list[IndexEntry]]:
        cached = self._index.get(repo_url)
        now = self._clock()
        if cached is not None and now - cached[0] < self._cache_ttl:
            return cached[1]
        body = self._get(f"{repo_url}/index.yaml", repo_url, self._max_index_bytes)
        index = _parse_index(body, repo_url)
        self._index[repo_url] = (now, index)
        return index

    def _credential_for(self, url: str) -> Any:
        if self._credentials is None:
            return None
        return self._credentials.for_registry(httpx.URL(url).netloc.decode("ascii"))

    def _get(self, url: str, repo_url: str, cap: int) -> bytes:
        headers: dict[str, str] = {}
        credential = self._credential_for(repo_url)
        target = httpx.URL(url)
        if credential is not None:
            same_host = target.netloc == httpx.URL(repo_url).netloc
            insecure = target.scheme == "http" and not is_loopback_host(target.host)
            if same_host and not insecure:
                headers["Authorization"] = basic_auth_header(credential)
            elif not same_host:
                log.warning("not sending %s's credentials to %s", repo_url, target.host)
        try:
            with self._client.stream("GET", target, headers=headers) as reply:
                if reply.status_code in (401, 403):
                    raise RegistryAuthError(
                        f"chart repository {repo_url} answered {reply.status_code} for {url}",
                        hint="store credentials for the repository's host in a credentials block",
                    )
                if reply.status_code == 404:
                    raise ChartNotFoundError(f"chart repository {repo_url}: {url} not found")
                if reply.status_code == 429 or reply.status_code >= 500:
                    raise RegistryUnavailableError(
                        f"chart repository {repo_url} answered {reply.status_code}"
                    )
                if reply.status_code >= 300:
                    raise InvalidInputError(
                        f"chart repository {repo_url} answered {reply.status_code} for {url}"
                    )
                chunks: list[bytes] = []
                size = 0
                for chunk in reply.iter_bytes():
                    size += len(chunk)
                    if size > cap:
                        raise InvalidInputError(
                            f"{url} is larger than {cap // (1024 * 1024)} MiB; refused"
                        )
                    chunks.append(chunk)
                return b"".join(chunks)
        except httpx.HTTPError as exc:
            raise RegistryUnavailableError(
                f"chart repository {repo_url} unreachable: {type(exc).__name__}"
            ) from exc

    def _download(self, spec: ChartSpec, chart: str, version: str, workdir: Path) -> Path:
        entry = self._entry(spec, chart, version)
        if not entry.urls:
            raise ChartNotFoundError(f"{spec.source}: {chart} {version} has no download URL")
        url = str(httpx.URL(f"{spec.source}/").join(entry.urls[0]))
        body = self._get(url, spec.source, MAX_CHART_BYTES)
        if entry.digest and hashlib.sha256(body).hexdigest() != entry.digest:
            raise InvalidInputError(f"{url} does not match the digest in {spec.source}/index.yaml")
        path = workdir / f"{chart}-{version}.tgz"
        path.write_bytes(body)
        return path

    def _oci_image(self, spec: ChartSpec, chart: str, version: str | None) -> ImageRef:
        ref = self.chart_ref(spec, chart, version or "0.0.0").ref.removeprefix("oci://")
        tag = version.replace("+", "_") if version else "latest"
        return ImageRef.parse(f"{ref}:{tag}")


def _image(asset: Asset) -> ImageRef:
    if asset.image is None:
        raise InvalidInputError(
            f"{asset.id} tracks an image in its values but no image was found there",
            hint="set `image:` in its charts entry, or check `values_path`",
        )
    return asset.image


def _parse_index(body: bytes, repo_url: str) -> dict[str, list[IndexEntry]]:
    try:
        data = YAML(typ="safe").load(body)
    except (YAMLError, ValueError) as exc:
        raise InvalidInputError(f"{repo_url}/index.yaml is not valid YAML") from exc
    if not isinstance(data, dict) or not isinstance(data.get("entries"), dict):
        raise InvalidInputError(f"{repo_url}/index.yaml has no `entries`")
    index: dict[str, list[IndexEntry]] = {}
    for name, items in data["entries"].items():
        if not isinstance(name, str) or not isinstance(items, list):
            continue
        entries = []
        for item in items:
            if not isinstance(item, dict) or not isinstance(item.get("version"), str | int | float):
                continue
            try:
                entries.append(IndexEntry.model_validate({**item, "version": str(item["version"])}))
            except ValidationError:
                log.debug("%s/index.yaml: skipping a malformed entry of %s", repo_url, name)
        index[name] = entries
    return index
