# One image for the webhook, the proxy sidecar and the capture init container.
# Build: docker build -t sandgate:0.1.0 .   (Python and every dependency pinned; see docker/constraints.txt)
ARG PYTHON_IMAGE=python:3.12.7-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/sandgate
COPY docker/constraints.txt /src/constraints.txt
COPY pyproject.toml README.md /src/
COPY proxy /src/proxy
COPY injector /src/injector
COPY webhook /src/webhook
COPY sandgate /src/sandgate
RUN /opt/sandgate/bin/pip install --no-compile --constraint /src/constraints.txt /src

FROM ${PYTHON_IMAGE}
# iptables (with the legacy backend gVisor needs) for `sandgate capture`.
RUN apt-get update \
    && apt-get install -y --no-install-recommends iptables=1.8.9-2 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 1337 sandgate \
    && useradd --system --uid 1337 --gid 1337 --no-create-home --shell /usr/sbin/nologin sandgate
COPY --from=build /opt/sandgate /opt/sandgate
ENV PATH=/opt/sandgate/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
# The proxy's UID; the webhook runs as its own non-root UID and capture as root, set by Kubernetes.
USER 1337:1337
# Kubernetes probes each role its own way (sidecar startupProbe, webhook /healthz, capture runs once):
# no single image-level check fits all three.
HEALTHCHECK NONE
ENTRYPOINT ["sandgate"]
CMD ["--help"]
