# Gatehouse image: `docker build -t gatehouse .` then
# `docker run -p 8000:8000 -v $PWD/my.yaml:/etc/gatehouse/gatehouse.yaml:ro -v gatehouse-data:/var/lib/gatehouse gatehouse`.

# --- builder: a wheel of the app, installed into a venv the final stage copies ---
FROM python:3.11-slim AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY app/ ./app/
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip wheel --no-deps --wheel-dir /wheels . \
    && /opt/venv/bin/pip install /wheels/*.whl

# --- final: the venv, the examples (the compose demo upstream runs from them), no build tools ---
FROM python:3.11-slim

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    GATEHOUSE_CONFIG=/etc/gatehouse/gatehouse.yaml

RUN groupadd --system --gid 10001 gatehouse \
    && useradd --system --uid 10001 --gid gatehouse --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin gatehouse

COPY --from=builder /opt/venv /opt/venv
COPY examples/ /srv/gatehouse/examples/
ENV PYTHONPATH=/srv/gatehouse
# A default config so the image starts as is; mount your own over it.
COPY examples/gatehouse.yaml /etc/gatehouse/gatehouse.yaml

# The working directory holds the default SQLite webhook store (./gatehouse-webhooks.db): a declared
# volume the app user owns, so the store is writable and outlives the container. Mount a named
# volume or a host directory (owned by uid 10001) there, or set webhook_store to PostgreSQL.
RUN mkdir -p /var/lib/gatehouse && chown 10001:10001 /var/lib/gatehouse
WORKDIR /var/lib/gatehouse
VOLUME ["/var/lib/gatehouse"]

USER 10001:10001
EXPOSE 8000

# Slim images have no curl: the standard library does the probe. Exit 1 on any error or non-200.
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/_gatehouse/healthz', timeout=3).status == 200 else 1)"]

CMD ["gatehouse", "serve", "--host", "0.0.0.0", "--port", "8000"]
