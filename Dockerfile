# tusserver in a slim image: non-root user (uid/gid 10001), uploads (and the SQLite registry) on
# the /data volume, dependencies pinned by constraints.txt, HEALTHCHECK on /health.
# Configure it with TUSSERVER_* environment variables (the healthcheck reads the same ones).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TUSSERVER_HOST=0.0.0.0 \
    TUSSERVER_PORT=8080 \
    TUSSERVER_UPLOAD_DIR=/data

WORKDIR /app
COPY pyproject.toml README.md constraints.txt ./
COPY tusserver ./tusserver
COPY conformance ./conformance
COPY hooks ./hooks
# The same pinned versions as `make run` and `make test`. A fixed uid/gid, so bind mounts can be
# chowned to it (chown -R 10001:10001 DIR) and orchestrators can verify "not root".
RUN pip install --no-cache-dir -c constraints.txt . \
    && groupadd --system --gid 10001 tus \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /app tus \
    && mkdir -p /data \
    && chown 10001:10001 /data

USER 10001:10001
VOLUME ["/data"]
EXPOSE 8080
# Slim images have no curl: the stdlib asks /health (503 or no answer: exit status 1). It follows
# TUSSERVER_PORT, TUSSERVER_HEALTH_PATH ('' = health off: always healthy), TUSSERVER_HOST (unless
# 0.0.0.0 or ::, then 127.0.0.1) and TUSSERVER_TLS_CERTIFICATE (https, self-signed ok).
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, ssl, urllib.request as r; e = os.environ.get; p = e('TUSSERVER_HEALTH_PATH', '/health'); h = e('TUSSERVER_HOST', ''); h = '127.0.0.1' if h in ('', '0.0.0.0', '::') else h; p and r.urlopen('%s://%s:%s%s' % ('https' if e('TUSSERVER_TLS_CERTIFICATE') else 'http', '[%s]' % h if ':' in h else h, e('TUSSERVER_PORT', '8080'), p), timeout=4, context=ssl._create_unverified_context())"]
CMD ["tusserver"]
