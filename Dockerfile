# syntax=docker/dockerfile:1
# The vfstream image: `docker build -t vfstream .`, then `docker run vfstream` runs a worker
# and `docker run vfstream ingest s3://...` (any `vfstream` subcommand) runs a one-shot job.
# RocksDB comes from the rocksdict wheel, so no system librocksdb is needed.

# ---- builder: a virtualenv holding the package and its dependencies ----
FROM python:3.11-slim AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

# A compiler only for platforms where some dependency ships no wheel; it stays in this stage.
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
# Dependencies first (against an empty package), so a code change does not reinstall them.
COPY pyproject.toml README.md* ./
RUN mkdir vfstream \
    && touch vfstream/__init__.py \
    && pip install . \
    && rm -rf vfstream build ./*.egg-info

COPY vfstream ./vfstream
RUN pip install --no-deps --force-reinstall . \
    && vfstream --help > /dev/null

# ---- runtime ----
FROM python:3.11-slim

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    VFSTREAM_DATA_DIR=/var/lib/vfstream \
    VFSTREAM_WEB_HOST=0.0.0.0 \
    VFSTREAM_WEB_PORT=6066

RUN groupadd --system --gid 10001 vfstream \
    && useradd --system --uid 10001 --gid vfstream --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin vfstream \
    && mkdir -p /app /var/lib/vfstream \
    && chown vfstream:vfstream /app /var/lib/vfstream

COPY --from=builder /opt/venv /opt/venv

WORKDIR /app
USER vfstream

EXPOSE 6066

# slim has no curl; urlopen raises (exit 1) on a refused connection or a non-2xx answer.
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:6066/health', timeout=4)"]

ENTRYPOINT ["vfstream"]
CMD ["worker"]
