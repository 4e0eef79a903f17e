# The finops image: API (uvicorn), Celery worker and beat, and the mock LLM all run from it.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    PROMETHEUS_MULTIPROC_DIR=/tmp/prometheus

WORKDIR /app
RUN apt-get update && apt-get install -y --no-install-recommends libpq5 && rm -rf /var/lib/apt/lists/*
COPY requirements.txt .
# torch from the CPU index: the default wheel pulls several GB of CUDA libraries the image never uses.
RUN pip install --no-cache-dir --extra-index-url https://download.pytorch.org/whl/cpu -r requirements.txt

COPY . .
RUN DEBUG=1 SECRET_KEY=collectstatic-only python manage.py collectstatic --noinput -v 0 \
    && useradd --system --uid 10001 finops && mkdir -p /tmp/prometheus /app/.finops/spool \
    && chown -R finops /tmp/prometheus /app/.finops
USER finops

EXPOSE 8000
# Workers: $WEB_CONCURRENCY (uvicorn's default for --workers; compose sets it).
ENV WEB_CONCURRENCY=2
CMD ["python", "-m", "uvicorn", "finops.asgi:application", "--host", "0.0.0.0", "--port", "8000", \
     "--loop", "uvloop", "--http", "httptools", "--no-access-log"]
