# syntax=docker/dockerfile:1
# calattach container image: `docker build -t calattach .`
#
# Build stage: the pinned Rust toolchain the project is tested with, `--locked`
# against Cargo.lock. Runtime stage: Debian slim with CA certificates (for S3
# over https), a non-root user, and nothing else.

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin calattach \
    && install -m 0755 target/release/calattach /usr/local/bin/calattach

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 calattach \
    && useradd --system --uid 10001 --gid calattach --home-dir /var/lib/calattach \
       --shell /usr/sbin/nologin calattach \
    && install -d -o calattach -g calattach -m 0750 /var/lib/calattach /var/lib/calattach/data
COPY --from=build /usr/local/bin/calattach /usr/local/bin/calattach
COPY deploy/calattach/proxy.toml /etc/calattach/proxy.toml
USER calattach:calattach
WORKDIR /var/lib/calattach
# Local attachment storage (the default `storage.url`); unused with S3.
VOLUME ["/var/lib/calattach"]
# 8080: CalDAV clients. 9090: /healthz, /readyz, /metrics (keep it private).
EXPOSE 8080 9090
# `calattach healthcheck` asks GET /healthz on server.admin_listen (no curl needed).
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["calattach", "healthcheck", "-c", "/etc/calattach/proxy.toml"]
# SIGTERM drains in-flight requests for server.shutdown_grace (30 s by default):
# give `docker stop` at least that long (`stop_grace_period` in compose).
STOPSIGNAL SIGTERM
ENTRYPOINT ["calattach"]
CMD ["serve", "-c", "/etc/calattach/proxy.toml"]
