# syntax=docker/dockerfile:1
# ICH Detect: the service, CPU TensorFlow and the shipped model, run as a non-root user.
#   docker build -t ich-detect .
#   docker run --rm -p 127.0.0.1:8000:8000 -v ich-data:/data --stop-timeout 45 ich-detect
# The full stack (PostgreSQL, Orthanc) is in docker-compose.yml; settings in docs/operations.md.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- builder: a virtual environment with the locked, hash-checked service dependencies ----
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /build
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# Only the lock file, so that a code change does not reinstall TensorFlow. It holds the service's
# packages (pyproject.toml's dependencies, not its train or dev extras) at the versions the tests
# passed with.
COPY requirements/service.txt ./requirements.txt
RUN pip install --require-hashes -r requirements.txt

# ---- runtime: the venv, the code and the model; nothing to build with ----
FROM ${PYTHON_IMAGE} AS runtime
# MALLOC_ARENA_MAX=2: two glibc malloc arenas per process instead of one per thread, so memory
# freed by one request's thread serves the next (docs/performance.md, "Start-up and memory").
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    ICH_HOST=0.0.0.0 \
    ICH_PORT=8000 \
    ICH_WORKERS=2 \
    ICH_DATA_DIR=/data \
    ICH_MODEL_STORE=/srv/ich/model_store \
    ICH_LOG_FORMAT=json \
    MALLOC_ARENA_MAX=2
# The font the PDF reports set Chinese, Japanese and Korean names in (DejaVu Sans, for the other
# scripts, comes with matplotlib).
RUN apt-get update \
    && apt-get install -y --no-install-recommends fonts-wqy-microhei \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 ich \
    && useradd --system --uid 10001 --gid ich --home-dir /srv/ich --shell /usr/sbin/nologin ich \
    && mkdir -p /data /models \
    && chown ich:ich /data /models
COPY --from=builder /opt/venv /opt/venv
WORKDIR /srv/ich
# The code stays owned by root: the service can read it, not change it.
COPY app/ app/
COPY ml/ ml/
COPY templates/ templates/
COPY static/ static/
COPY model_store/ model_store/
USER ich
# /data: database (SQLite by default) and stored files. /models: other model bundles, used with
# ICH_MODEL_STORE=/models.
VOLUME ["/data", "/models"]
EXPOSE 8000
# On SIGTERM uvicorn stops accepting and finishes open requests for up to 30 s, so stop the
# container with a longer timeout (docker run --stop-timeout 45; compose: stop_grace_period).
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=10s --start-period=120s --retries=3 \
    CMD ["python", "-m", "app.cli", "healthcheck"]
# python -m app: schema upgrade and first API key, then uvicorn with ICH_WORKERS workers.
CMD ["python", "-m", "app"]
