# The recostream image: `recostream worker` by default; docker-compose.yml
# also runs `recostream produce` and a topic-creation one-liner from it.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
# Every dependency installs from a manylinux wheel (x86_64); nothing is compiled.
COPY . .
RUN pip install . \
 && useradd --create-home --uid 10001 recostream \
 && mkdir -p /app/run \
 && chown recostream /app/run

USER recostream
# Prometheus metrics (RECOSTREAM_METRICS_PORT).
EXPOSE 9464
CMD ["recostream", "worker"]
