# One image for every tickflow process (ingestor, worker, simulator, scripts).
FROM python:3.11-slim-bookworm
ENV PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY config ./config
COPY core ./core
COPY storage ./storage
COPY topology ./topology
COPY scripts ./scripts
RUN pip install --no-cache-dir .
RUN useradd --create-home tickflow && mkdir -p /data && chown tickflow /data
USER tickflow
ENV TICKFLOW_STATE_DIR=/data
CMD ["faust", "-A", "topology", "worker", "-l", "info"]
