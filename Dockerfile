# rotd as a container (a sidecar, or alone). Build:  docker build -t rotd .
# Run:  docker run --stop-timeout 45 -v /path/inventory.yaml:/etc/rotd/inventory.yaml:ro \
#         -e AWS_REGION=us-east-1 rotd
# The inventory is mounted at /etc/rotd/inventory.yaml; AWS credentials come from the standard
# chain (environment, a web identity token, the ECS or EC2 metadata endpoint).

ARG PYTHON_IMAGE=python:3.11-slim

# Builder: install rotd and its dependencies into a virtual environment at its final path.
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/rotd
WORKDIR /src
COPY pyproject.toml README.md ./
COPY rotd ./rotd
RUN /opt/rotd/bin/pip install . \
    && /opt/rotd/bin/rotd --version

# Runtime: the same base (the venv's python links to its interpreter), the venv, no build tools.
FROM ${PYTHON_IMAGE}
# The repository's address, given at build time:  --build-arg SOURCE_URL=https://...
ARG SOURCE_URL=""
LABEL org.opencontainers.image.title="rotd" \
      org.opencontainers.image.description="A rotation daemon for database credentials kept in AWS Secrets Manager" \
      org.opencontainers.image.source="${SOURCE_URL}" \
      org.opencontainers.image.licenses="Apache-2.0"

# tini is the image's init (PID 1): it reaps orphaned processes, which hooks leave behind.
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 rotd \
    && useradd --system --uid 10001 --gid rotd --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin rotd
COPY --from=builder /opt/rotd /opt/rotd

# Byte code was compiled at install time, so a read-only root file system is fine.
ENV PATH=/opt/rotd/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

# Numeric, so that Kubernetes' runAsNonRoot can check it.
USER 10001:10001
WORKDIR /

# /metrics and /healthz, when the inventory sets daemon.listen: 0.0.0.0:9464 to publish them,
# 127.0.0.1:9464 for this health check and a scraper in the same pod only.
EXPOSE 9464
# slim has no curl; urlopen raises (exit 1) on a refused connection or a non-2xx answer.
# Without daemon.listen the check fails: run with --no-healthcheck then.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["/opt/rotd/bin/python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9464/healthz', timeout=3)"]

# PID 1 is tini, with rotd its only child (exec form, no shell in between). PID 1 inherits
# every process orphaned in the container, and hooks orphan theirs (a command that leaves a
# process in the background and exits): tini reaps them, where rotd would leave them as
# zombies until the container's PID limit. tini passes every signal it receives on to rotd,
# which handles SIGTERM, SIGINT and SIGHUP, and exits with rotd's exit code. Without -g it
# signals rotd alone: hooks run in process groups of their own, and a stopping rotd lets
# them finish within its grace. -s makes it a subreaper, so that it still reaps when
# something else is PID 1 (docker run --init, a pod that shares its process namespace).
# rotd drains for daemon.shutdown_grace (30s by default): give it more than that before
# SIGKILL (docker --stop-timeout 45, compose stop_grace_period: 45s, Kubernetes
# terminationGracePeriodSeconds: 45; their defaults are 10s, 10s and 30s).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/bin/tini", "-s", "--", "/opt/rotd/bin/rotd"]
CMD ["run", "-c", "/etc/rotd/inventory.yaml"]
