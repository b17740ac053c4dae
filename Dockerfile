# redshard and redshard-admin in a small image.
#
#   docker build -t redshard .
#   docker run -v $PWD/my.toml:/etc/redshard/redshard.toml:ro -p 127.0.0.1:6379:6379 redshard
#
# Ports: 6379 clients (`listen`), 6390 the admin port for redshard-admin on TCP
# (`admin_listen`, which needs `admin_password`; inside the container `docker exec ...
# redshard-admin check` uses the proxy's admin socket instead, no password), 9121 metrics and health (`metrics_listen`). Inside a container the configuration must
# listen on 0.0.0.0 (see deploy/redshard.docker.toml); publish the ports on 127.0.0.1 or a
# private network only.

FROM rust:1-bookworm AS build
# The etcd client's gRPC code is generated at build time.
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq protobuf-compiler libprotobuf-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p redshard-proxy -p redshard-admin \
 && install -m 0755 target/release/redshard target/release/redshard-admin /usr/local/bin/

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin redshard \
 && mkdir -p /etc/redshard /var/lib/redshard \
 && chown redshard:redshard /var/lib/redshard
COPY --from=build /usr/local/bin/redshard /usr/local/bin/redshard-admin /usr/local/bin/
USER redshard
# Clients, admin port, metrics and health.
EXPOSE 6379 6390 9121
# Asks http://127.0.0.1:9121/readyz: healthy when every slot has a reachable master. With
# another metrics_listen port, override with `redshard healthcheck --url ...`.
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 CMD ["redshard", "healthcheck"]
# SIGTERM drains clients within shutdown_grace_ms; SIGHUP reloads the configuration.
STOPSIGNAL SIGTERM
ENTRYPOINT ["redshard"]
CMD ["--config", "/etc/redshard/redshard.toml"]
