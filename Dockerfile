# One image per service: SERVICE is api, processor or query, PORT the port it serves on
# (its default: api 8000, query 8001, processor 8002, health and metrics). Built with the
# repository root as context; docker compose passes both arguments:
#   docker build --build-arg SERVICE=api --build-arg PORT=8000 -t orders-api .
#   docker build --build-arg SERVICE=processor --build-arg PORT=8002 -t orders-processor .
#   docker build --build-arg SERVICE=query --build-arg PORT=8001 -t orders-query .
FROM python:3.11-slim-bookworm AS build
ARG SERVICE
ARG PORT
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_CONSTRAINT=/src/constraints.txt
WORKDIR /src
RUN case "${SERVICE}" in api|processor|query) ;; *) echo "--build-arg SERVICE=api|processor|query" >&2; exit 1 ;; esac \
 && case "${PORT}" in ''|*[!0-9]*) echo "--build-arg PORT=<the service's port>" >&2; exit 1 ;; esac
COPY constraints.txt ./
COPY libs libs
COPY services/${SERVICE} services/${SERVICE}
# Same pins as local installs and CI: every version comes from constraints.txt. The service
# names the libs/ packages it needs (pip installs only those from the paths given); `orders-service` runs its entry point.
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir ./libs/contract ./libs/runtime ./libs/readmodel ./libs/kafka ./libs/web "./services/${SERVICE}" \
 && ln -s "orders-${SERVICE}" /opt/venv/bin/orders-service

FROM python:3.11-slim-bookworm
ARG SERVICE
ARG PORT
RUN groupadd --system --gid 10001 orders \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin orders
COPY --from=build /opt/venv /opt/venv
# The service reads its port from API_PORT, QUERY_PORT or PROCESSOR_PORT; the command sets that
# variable to PORT unless it is set at run time, and the healthcheck asks the same port.
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 BIND_HOST=0.0.0.0 \
    SERVICE=${SERVICE} PORT=${PORT}
USER 10001:10001
EXPOSE ${PORT}
HEALTHCHECK --interval=5s --timeout=3s --start-period=30s --retries=6 \
  CMD ["python", "-c", "import os, urllib.request; port = os.environ.get(os.environ['SERVICE'].upper() + '_PORT', os.environ['PORT']); urllib.request.urlopen(f'http://127.0.0.1:{port}/health/ready', timeout=2)"]
CMD ["/bin/sh", "-c", "case \"$SERVICE\" in api) export API_PORT=\"${API_PORT:-$PORT}\" ;; query) export QUERY_PORT=\"${QUERY_PORT:-$PORT}\" ;; processor) export PROCESSOR_PORT=\"${PROCESSOR_PORT:-$PORT}\" ;; esac; exec orders-service"]
