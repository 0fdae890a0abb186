# syntax=docker/dockerfile:1
# The server image: `bg-agent` only (with the Kubernetes executor, tasks run in runner
# images, not here). Build from the repository root:
#   docker build -f deploy/server.Dockerfile -t bg-agent .

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
# SQLX_OFFLINE (.cargo/config.toml): the queries are checked against .sqlx/, no database.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --locked --release -p bg-agent --bin bg-agent \
    && install -m 0755 target/release/bg-agent /bg-agent

FROM debian:bookworm-slim
# Debian's security updates replace package versions on the mirror, so pinning them
# would break the build; the base image tag pins the release.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
RUN useradd --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin bg-agent
COPY --from=build /bg-agent /usr/local/bin/bg-agent
USER 10001
ENTRYPOINT ["/usr/local/bin/bg-agent"]
CMD ["serve"]
