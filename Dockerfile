# tusserver in a slim image: non-root user, uploads (and the SQLite registry) on a volume.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TUSSERVER_HOST=0.0.0.0 \
    TUSSERVER_PORT=8080 \
    TUSSERVER_UPLOAD_DIR=/data

WORKDIR /app
COPY pyproject.toml README.md ./
COPY tusserver ./tusserver
COPY hooks ./hooks
RUN pip install --no-cache-dir . \
    && useradd --system --uid 10001 --home-dir /app tus \
    && mkdir -p /data \
    && chown tus /data

USER tus
VOLUME ["/data"]
EXPOSE 8080
CMD ["tusserver"]
