# One image for the webhook, the proxy sidecar and the capture init container.
# Build: docker build -t sandgate:0.1.0 .   (Python and every dependency pinned; see docker/constraints.txt)
ARG PYTHON_IMAGE=python:3.12.7-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# A C compiler for the compiled per-request modules (mypyc), in this stage only. Not pinned: the
# versions are the base image's own Debian release's, and nothing of them reaches the final image.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/sandgate && python -m venv /opt/build
COPY docker/constraints.txt docker/build-constraints.txt /src/
# The build's own venv: mypy (mypyc) and setuptools, and the runtime dependencies, which mypyc
# type-checks the modules against.
RUN /opt/build/bin/pip install --requirement /src/constraints.txt --requirement /src/build-constraints.txt
COPY pyproject.toml setup.py README.md /src/
COPY proxy /src/proxy
COPY injector /src/injector
COPY webhook /src/webhook
COPY sandgate /src/sandgate
# The scrubbers' fixed prefilter sets, compiled, go into the wheel (python -m proxy.prefilters):
# ~30-45 ms of every start otherwise. The check below requires that none is compiled at import.
RUN SANDGATE_NATIVE=0 /opt/build/bin/python -m proxy.prefilters
# The per-request modules are compiled profile-guided (setup.py says how; scripts/compile does the
# same for a checkout): built in place counting what runs, trained on the data path (bench/inproc.py,
# in process: no network), and removed again; the wheel's build below finds the counts in
# build/mypyc/temp, where both builds put their objects. Nothing of bench/ reaches the wheel.
COPY scripts/pgo-train /src/scripts/
COPY bench/inproc.py bench/run.py bench/client.py bench/upstream.py /src/bench/
RUN SANDGATE_COMPILE=1 SANDGATE_PGO=generate /opt/build/bin/python setup.py -q build_ext --inplace \
        --build-temp build/mypyc/temp --build-lib build/mypyc/lib \
    && scripts/pgo-train /opt/build/bin/python \
    && find proxy -name '*.cpython-*.so' -delete && rm proxy/native_build.json
# The wheel with the per-request modules compiled (setup.py, proxy/native.py); the sources ship too,
# and the sidecar refuses extensions that were not built from them.
# Bytecode is compiled here, once, because the sidecar cannot write it (read-only, non-root) and
# would otherwise compile every module it imports at every start: ~1 s of CPU before it is ready.
# Hash-based and unchecked: the image never changes under its .pyc files, and they are reproducible.
RUN SANDGATE_COMPILE=1 SANDGATE_PGO=use /opt/build/bin/pip wheel --no-deps --no-build-isolation --wheel-dir /wheels /src \
    && /opt/sandgate/bin/pip install --no-compile --constraint /src/constraints.txt /wheels/sandgate-*.whl \
    && /opt/sandgate/bin/python -c 'import proxy.native as n, sys; sys.exit(n.mode() != "compiled")' \
    && /opt/sandgate/bin/python -c 'import proxy.core.scrub, proxy.core.anyof as a, sys; sys.exit(len(a.COMPILED))' \
    && /opt/sandgate/bin/python -m compileall -q -j 0 --invalidation-mode unchecked-hash /opt/sandgate

FROM ${PYTHON_IMAGE}
# iptables (with the legacy backend gVisor needs) for `sandgate capture`. The base image ships its
# standard library without bytecode: compiled here, as the venv is above.
RUN apt-get update \
    && apt-get install -y --no-install-recommends iptables=1.8.9-2 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 1337 sandgate \
    && useradd --system --uid 1337 --gid 1337 --no-create-home --shell /usr/sbin/nologin sandgate \
    && python -m compileall -q -j 0 --invalidation-mode unchecked-hash \
        "$(python -c 'import sysconfig; print(sysconfig.get_paths()["stdlib"])')"
COPY --from=build /opt/sandgate /opt/sandgate
ENV PATH=/opt/sandgate/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 SANDGATE_NATIVE=1
# The proxy's UID; the webhook runs as its own non-root UID and capture as root, set by Kubernetes.
USER 1337:1337
# Kubernetes probes each role its own way (sidecar startupProbe, webhook /healthz, capture runs once):
# no single image-level check fits all three.
HEALTHCHECK NONE
ENTRYPOINT ["sandgate"]
CMD ["--help"]
