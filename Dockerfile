# syntax=docker/dockerfile:1
# calve's container image. The build stage compiles the `calve` binary exactly as CI does
# (`cargo build --release --locked`); OpenSSL and librdkafka are built from vendored sources,
# so the build image needs only what rust:*-bookworm already has (gcc, make, perl). The runtime
# stage is Debian slim plus CA certificates (TLS to Kafka, S3 and a REST catalog verifies
# against the system store): the binary links only libc, libm, libgcc_s and zlib.
#
#   docker build -t calve .
#   docker run --rm -v /etc/calve:/etc/calve:ro -v calve-state:/var/lib/calve \
#     -v /etc/calve/credentials:/run/credentials/calve.service:ro -p 9464:9464 calve
# (the secrets where deploy/calve.toml reads them, as systemd's LoadCredential= puts them)
#
# See README.md, "Deploying".

ARG RUST_VERSION=1.95
FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p calve \
 && install -m 0755 target/release/calve /usr/local/bin/calve

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --home-dir /var/lib/calve --create-home calve
COPY --from=build /usr/local/bin/calve /usr/local/bin/calve
# The key index's spill files and a local warehouse (if any) live here; with an S3 warehouse
# and a REST catalog nothing else is written to disk.
VOLUME /var/lib/calve
WORKDIR /var/lib/calve
USER calve
# /metrics, /healthz, /readyz when calve.toml has [http] listen = "0.0.0.0:9464".
EXPOSE 9464
# calve flushes, commits and exits 0 on SIGTERM; give it the freshness band to do so
# (docker stop --time, Kubernetes terminationGracePeriodSeconds).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/calve"]
CMD ["run", "--config", "/etc/calve/calve.toml"]
