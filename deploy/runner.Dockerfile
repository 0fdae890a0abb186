# syntax=docker/dockerfile:1
# The runner image: the one program of crates/runner and the tools a task needs (git,
# Node.js/npm, Python). Build from the repository root:
#   docker build -f deploy/runner.Dockerfile -t bg-agent-runner .
# The Kubernetes executor's Job must agree with the final stage's ENTRYPOINT, USER and
# WORKDIR (crates/server/src/executor/runner_image.rs; a test parses this file).

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --locked --release -p bg-agent-runner --bin bg-agent-runner \
    && install -m 0755 target/release/bg-agent-runner /bg-agent-runner

FROM debian:bookworm-slim
# Debian's security updates replace package versions on the mirror, so pinning them
# would break the build; the base image tag pins the release.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates git nodejs npm python3 \
    && rm -rf /var/lib/apt/lists/*
RUN useradd --uid 10001 --user-group --create-home --home-dir /home/runner --shell /usr/sbin/nologin runner \
    && install -d -o 10001 -g 10001 /workspace
COPY --from=build /bg-agent-runner /usr/local/bin/bg-agent-runner
ENV HOME=/home/runner
USER 10001
WORKDIR /workspace
ENTRYPOINT ["/usr/local/bin/bg-agent-runner"]
