# fraudfl services image: `fraudfl aggregator|bank-node|init|... --config FILE`.
#   docker build -t fraudfl:0.1.0 .
# torch comes from the PyTorch CPU index: the PyPI Linux wheel of torch depends on the CUDA
# packages (gigabytes). constraints.txt pins torch==2.13.0, which the local-version wheel
# 2.13.0+cpu satisfies, so the second install keeps it.
FROM python:3.11-slim AS build
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
 && /opt/fraudfl/bin/python -c "import torch, fraudfl.monitoring; assert torch.__version__.startswith('2.13.0')"

FROM python:3.11-slim
# A fixed non-root uid: key files are 0600 and must belong to the user the services run as.
RUN groupadd --system --gid 10001 fraudfl \
 && useradd --system --uid 10001 --gid fraudfl --home-dir /var/lib/fraudfl --create-home fraudfl \
 && install -d -o fraudfl -g fraudfl -m 0750 /federation
COPY --from=build /opt/fraudfl /opt/fraudfl
ENV PATH=/opt/fraudfl/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MPLCONFIGDIR=/tmp/matplotlib \
    XDG_CACHE_HOME=/tmp/.cache
USER 10001:10001
WORKDIR /var/lib/fraudfl
# Prometheus metrics (the `metrics_port` config key); the aggregator's conventional port.
EXPOSE 9100
ENTRYPOINT ["fraudfl"]
CMD ["--help"]
