"""What the updater manages: assets, their ids and the image references they run."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import NewType

from pydantic import BaseModel, ConfigDict, Field

from safe_updater.domain.errors import InvalidInputError

AssetId = NewType("AssetId", str)
"""``docker:<host>/<container>``, ``k8s:<cluster>/<namespace>/<kind>/<name>`` or
``helm:<cluster>/<namespace>/<release>``."""

LABEL_PREFIX = "safe-updater.io/"
ENABLE_LABEL = "safe-updater.io/enabled"
WATCHTOWER_ENABLE_LABEL = "com.centurylinklabs.watchtower.enable"

DEFAULT_REGISTRY = "docker.io"

# OCI distribution spec grammar, written without nested quantifiers so matching stays linear.
_TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_DIGEST_RE = re.compile(r"[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]{32,}")
_COMPONENT_RE = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
MAX_REFERENCE_LENGTH = 4096


class AssetKind(StrEnum):
    DOCKER = "docker"
    KUBERNETES = "k8s"
    HELM = "helm"


class ImageRef(BaseModel):
    """A parsed image reference: ``[registry/]repository[:tag][@digest]``."""

    model_config = ConfigDict(frozen=True)

    registry: str = DEFAULT_REGISTRY
    repository: str
    tag: str | None = None
    digest: str | None = None

    @classmethod
    def parse(cls, reference: str) -> ImageRef:
        """Parse an image reference the way Docker does; raise :class:`InvalidInputError`."""
        if not reference or len(reference) > MAX_REFERENCE_LENGTH:
            raise InvalidInputError(
                f"image reference {reference[:80]!r} is empty or too long",
                hint="use registry/repository:tag",
            )
        rest = reference
        digest: str | None = None
        if "@" in rest:
            rest, digest = rest.split("@", 1)
            if not _DIGEST_RE.fullmatch(digest):
                raise InvalidInputError(
                    f"image reference {reference!r} has an invalid digest",
                    hint="digests look like sha256:<64 hex digits>",
                )
        tag: str | None = None
        last_slash = rest.rfind("/")
        colon = rest.rfind(":")
        if colon > last_slash:
            rest, tag = rest[:colon], rest[colon + 1 :]
            if not _TAG_RE.fullmatch(tag):
                raise InvalidInputError(
                    f"image reference {reference!r} has an invalid tag {tag!r}",
                    hint="tags are 1-128 characters of letters, digits, '_', '.', '-'",
                )
        first, sep, remainder = rest.partition("/")
        if sep and ("." in first or ":" in first or first == "localhost"):
            registry, repository = first, remainder
        else:
            registry, repository = DEFAULT_REGISTRY, rest
            if "/" not in repository:
                repository = f"library/{repository}"
        if not repository or not all(_COMPONENT_RE.fullmatch(p) for p in repository.split("/")):
            raise InvalidInputError(
                f"image reference {reference!r} has an invalid repository {repository!r}",
                hint="repository names are lowercase letters, digits and separators",
            )
        if tag is None and digest is None:
            tag = "latest"
        return cls(registry=registry, repository=repository, tag=tag, digest=digest)

    @property
    def name(self) -> str:
        """``registry/repository`` as Docker writes it (Docker Hub without its host)."""
        if self.registry == DEFAULT_REGISTRY:
            repo = self.repository.removeprefix("library/")
            return repo
        return f"{self.registry}/{self.repository}"

    def with_tag(self, tag: str) -> ImageRef:
        return ImageRef(registry=self.registry, repository=self.repository, tag=tag)

    def __str__(self) -> str:
        text = self.name
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


class Asset(BaseModel):
    """One thing the updater can update: a container, a workload container or a release."""

    model_config = ConfigDict(frozen=True)

    id: AssetId
    kind: AssetKind
    target: str = Field(description="Docker host or Kubernetes cluster name from the config.")
    name: str
    namespace: str | None = None
    workload_kind: str | None = Field(
        default=None, description="Deployment, StatefulSet, DaemonSet, CronJob (k8s only)."
    )
    container: str | None = Field(default=None, description="Container name inside a workload.")
    image: ImageRef | None = None
    current_version: str = Field(description="The tag or chart version running now.")
    current_digest: str | None = None
    chart: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)

    @property
    def group(self) -> str | None:
        return self.labels.get(f"{LABEL_PREFIX}group")

    @property
    def opted_in(self) -> bool:
        value = self.labels.get(ENABLE_LABEL) or self.labels.get(WATCHTOWER_ENABLE_LABEL)
        return (value or "").strip().lower() == "true"


def docker_asset_id(host: str, container: str) -> AssetId:
    return AssetId(f"docker:{host}/{container}")


def k8s_asset_id(cluster: str, namespace: str, kind: str, name: str) -> AssetId:
    return AssetId(f"k8s:{cluster}/{namespace}/{kind.lower()}/{name}")


def helm_asset_id(cluster: str, namespace: str, release: str) -> AssetId:
    return AssetId(f"helm:{cluster}/{namespace}/{release}")


def parse_asset_id(text: str) -> tuple[AssetKind, list[str]]:
    """Split an asset id into its kind and path parts; raise :class:`InvalidInputError`."""
    kind_text, sep, path = text.partition(":")
    expected = {AssetKind.DOCKER: 2, AssetKind.KUBERNETES: 4, AssetKind.HELM: 3}
    try:
        kind = AssetKind(kind_text)
    except ValueError:
        kind = None
    parts = path.split("/") if sep else []
    if kind is None or len(parts) != expected[kind] or not all(parts):
        raise InvalidInputError(
            f"{text!r} is not an asset id",
            hint="use docker:<host>/<container>, k8s:<cluster>/<namespace>/<kind>/<name> "
            "or helm:<cluster>/<namespace>/<release> (see `safe-updater assets`)",
        )
    return kind, parts
