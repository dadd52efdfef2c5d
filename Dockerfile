# syntax=docker/dockerfile:1
# ServerActions: one image with sa-api, sa-worker and sactl (see docker-compose.yml).

FROM rust:1-bookworm AS builder
WORKDIR /src
COPY . .
# Cache mounts keep the registry and target/ between builds; the binaries are copied out of the
# cached target/ in the same step (a cache mount is not part of the image).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --bins -p api -p worker -p client \
    && mkdir -p /out \
    && cp target/release/sa-api target/release/sa-worker target/release/sactl /out/

FROM debian:bookworm-slim
# The workers drive the system `ssh` client (openssh crate, native-mux); curl: the api healthcheck.
RUN apt-get update \
    && apt-get install -y --no-install-recommends openssh-client ca-certificates curl \
    && rm -rf /var/lib/apt/lists/*
# ssh needs its user in /etc/passwd; uid 10001 must be able to read the mounted SSH key.
RUN groupadd --system --gid 10001 sa \
    && useradd --system --uid 10001 --gid sa --create-home --home-dir /home/sa \
       --shell /usr/sbin/nologin sa
COPY --from=builder /out/ /usr/local/bin/
USER 10001:10001
WORKDIR /home/sa
EXPOSE 8080 9100
CMD ["sa-api"]
