# The search service: stateless, talks to the embedder over gRPC and to Milvus via pymilvus.
# Build: docker build -f docker/search.Dockerfile -t ris-search .
# CI replays this stage without Docker (scripts/replay_dockerfile.py): its COPY lines, its
# pip line in a fresh venv, its ENV and CMD, then its HEALTHCHECK.
FROM python:3.11-slim-bookworm
RUN useradd --create-home --uid 10001 ris
ENV PYTHONUNBUFFERED=1
WORKDIR /app
COPY pyproject.toml README.md constraints.txt ./
COPY protos ./protos
COPY common ./common
COPY client ./client
COPY cli ./cli
COPY gateway ./gateway
COPY launcher ./launcher
COPY tools ./tools
COPY embedder_service ./embedder_service
COPY search_service ./search_service
COPY scripts/grpc_health_probe.py ./scripts/
RUN pip install --no-cache-dir -c constraints.txt ".[search]"
USER ris
ENV RIS_SEARCH_HOST=0.0.0.0 \
    RIS_SEARCH_PORT=50052
EXPOSE 50052 9101
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "scripts/grpc_health_probe.py", "127.0.0.1:50052"]
CMD ["python", "-m", "ris.search"]
