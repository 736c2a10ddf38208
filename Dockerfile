# The recostream image: `recostream worker` by default; docker-compose.yml
# also runs `recostream produce` and a topic-creation one-liner from it.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    NUMBA_CACHE_DIR=/app/numba-cache

WORKDIR /app
# Every dependency installs from a manylinux wheel (x86_64); nothing is compiled. The ranker's
# numba loop is compiled once here, into NUMBA_CACHE_DIR, so that a worker starts without compiling.
COPY . .
RUN pip install . \
 && (cd / && python -c "from models.ranking.kernels import compile_now; compile_now()") \
 && useradd --create-home --uid 10001 recostream \
 && mkdir -p /app/run \
 && chown -R recostream /app/run /app/numba-cache

USER recostream
# Prometheus metrics (RECOSTREAM_METRICS_PORT).
EXPOSE 9464
CMD ["recostream", "worker"]
