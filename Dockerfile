# Safe Auto-Updater: one image for `safe-updater serve`, the in-cluster Prefect server and
# the CLI (docs/packaging.md). Build from the repository root:
#
#   docker build -t safe-updater:0.1.0 .
#
# No registry is named here: the base comes from PYTHON_IMAGE (default `python:3.11-slim`,
# resolved by whatever registry the build host is set up for), and you push the result to yours.
# No `# syntax=` line on purpose: it would make BuildKit pull a frontend image before building,
# which fails offline; nothing here needs a newer frontend than the builder's own.

ARG PYTHON_IMAGE=python:3.11-slim

# --- build: install the package and its dependencies into a venv ------------------------------
FROM ${PYTHON_IMAGE} AS build
# Extra pip options for this stage only (never in the final image), e.g. an offline build from a
# wheelhouse made with `pip wheel . -w wheelhouse`:
#   --build-arg PIP_INSTALL_OPTIONS="--no-index --find-links=/src/wheelhouse"
ARG PIP_INSTALL_OPTIONS=""
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
# A venv rather than the system site-packages: Debian-based bases mark the system Python as
# externally managed (PEP 668), and a venv copies to the final stage as one directory.
RUN python3 -m venv /opt/safe-updater
WORKDIR /src
# .dockerignore lets in only pyproject.toml, README.md, src/ and an optional wheelhouse/.
COPY . .
# PIP_INSTALL_OPTIONS is deliberately unquoted: it holds several options.
RUN /opt/safe-updater/bin/pip install ${PIP_INSTALL_OPTIONS} . \
 && /opt/safe-updater/bin/safe-updater --help > /dev/null

# --- runtime ------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}
# A fixed numeric uid/gid so Kubernetes' runAsNonRoot can verify it without a passwd lookup and
# volume ownership (fsGroup) matches across rebuilds.
ARG UID=10001
ARG GID=10001
RUN groupadd --system --gid "${GID}" safe-updater \
 && useradd --system --uid "${UID}" --gid "${GID}" --home-dir /var/lib/safe-updater \
        --no-create-home --shell /usr/sbin/nologin safe-updater \
 && mkdir -p /var/lib/safe-updater /etc/safe-updater \
 && chown "${UID}:${GID}" /var/lib/safe-updater
COPY --from=build /opt/safe-updater /opt/safe-updater

# Everything that is written lives under /var/lib/safe-updater (the volume): the state store's
# SQLite file, Prefect's home (its SQLite database, UI build, profiles). The root filesystem can
# then be mounted read-only (plus a writable /tmp).
ENV PATH=/opt/safe-updater/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/var/lib/safe-updater \
    SAFE_UPDATER_HOME=/var/lib/safe-updater \
    SAFE_UPDATER_CONFIG=/etc/safe-updater/safe-updater.yaml \
    PREFECT_HOME=/var/lib/safe-updater/prefect \
    PREFECT_SERVER_ANALYTICS_ENABLED=false
VOLUME ["/var/lib/safe-updater"]
WORKDIR /var/lib/safe-updater
USER ${UID}:${GID}
# 4200: the Prefect API and UI of `serve`; 9720: /metrics.
EXPOSE 4200 9720
ENTRYPOINT ["safe-updater"]
# Inside a container 127.0.0.1 is unreachable from outside, so serve on all addresses; put
# authentication in front of port 4200 (docs/serve.md) and expose 9720 to Prometheus only.
CMD ["serve", "--host", "0.0.0.0"]
