# syntax=docker/dockerfile:1
# hookgate container image: a statically linked binary on distroless/static, run as UID 65532.
#
#   docker build -t hookgate .
#   docker run --rm -v "$PWD/deploy/config.yaml:/etc/hookgate/config.yaml:ro" hookgate   # + certs
#
# .ci/deploy-checks builds the binary with the same ENV and `cargo build` line as below and
# runs `hookgate check` with it in an empty root filesystem (see deploy/README.md).

# ---- build: the pinned Rust toolchain, glibc linked statically (+crt-static) ----
FROM rust:1.95.0-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY certs/wise ./certs/wise
ENV RUSTFLAGS="-C target-feature=+crt-static" CARGO_TARGET_DIR=/src/target
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --target x86_64-unknown-linux-gnu \
 && install -D -m 0755 /src/target/x86_64-unknown-linux-gnu/release/hookgate /out/hookgate

# ---- runtime: no shell, no package manager; only CA roots, tzdata, /etc/passwd ----
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/hookgate /usr/local/bin/hookgate
ENV PATH=/usr/local/bin:/usr/bin:/bin \
    HOOKGATE_CONFIG=/etc/hookgate/config.yaml
# 65532 is distroless's "nonroot"; numeric, so that runAsNonRoot can verify it.
USER 65532:65532
# 8443: TLS listener (`listen`); 9090: admin /metrics /healthz /readyz (`admin.listen`).
EXPOSE 8443 9090
# checkov:skip=CKV_DOCKER_2: No HEALTHCHECK: the image has no shell or HTTP client to run one; Kubernetes probes /healthz and /readyz on the admin port (deploy/kubernetes)
ENTRYPOINT ["hookgate", "run"]
