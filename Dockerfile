# hydra-authz container image.
#
#   docker build -t hydra-authz .
#   docker run --rm -p 9191:9191 -p 9192:9192 \
#     -e HYDRA_AUTHZ_SERVER__GRPC_ADDR=0.0.0.0:9191 \
#     -e HYDRA_AUTHZ_SERVER__HTTP_ADDR=0.0.0.0:9192 \
#     -e HYDRA_AUTHZ_INTROSPECTION__URL=http://hydra:4445/admin/oauth2/introspect \
#     hydra-authz
#
# The build step is exactly the release build CI runs: .ci/run runs this RUN
# line verbatim (`cargo build --release --locked`: Cargo.lock is honoured,
# protoc is vendored by build.rs, so the builder needs nothing beyond the Rust
# image), and the deployment tests run the binary it produces. No container
# engine runs in CI, so the image itself is never built there;
# deploy/tests/test_dockerfile.py parses this file with BuildKit's own parser,
# lints it with hadolint and checks that the build command is the one in
# .ci/run, the user is non-root and the HEALTHCHECK runs `hydra-authz health`.

# ---- build ------------------------------------------------------------------
# The same Rust release CI builds and tests with (deploy/tests checks they agree).
FROM rust:1.95-bookworm AS builder
WORKDIR /src
# .dockerignore keeps target/, virtualenvs and node_modules out of the context.
COPY . .
RUN cargo build --release --locked

# ---- runtime ----------------------------------------------------------------
# distroless cc: glibc + libgcc + CA certificates, no shell, no package
# manager. The :nonroot tag's default user is uid/gid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /src/target/release/hydra-authz /usr/local/bin/hydra-authz
# Default config: the repository's seed configuration. It binds loopback;
# in a container override the listeners (env above) or mount your own file
# (the Helm chart mounts a ConfigMap over /etc/hydra-authz).
COPY config/hydra-authz.toml /etc/hydra-authz/hydra-authz.toml
USER 65532:65532
# 9191: gRPC (Envoy ext_authz, grpc.health.v1.Health; the admin API is on
#       its own port, 9193, off unless credentials are configured)
# 9192: HTTP (GET /healthz, GET /readyz, GET /metrics)
EXPOSE 9191 9192
# No shell or curl here, so the binary probes itself (exec form):
# `hydra-authz health` GETs /readyz on server.http_addr from this config and
# the container's HYDRA_AUTHZ_* env (a 0.0.0.0 bind is probed on 127.0.0.1),
# with a 2 s timeout of its own. Running another config file? Override this
# too. Kubernetes ignores HEALTHCHECK and uses the chart's httpGet probes.
HEALTHCHECK --interval=15s --timeout=5s --start-period=10s --retries=3 \
    CMD ["/usr/local/bin/hydra-authz", "health", "--config", "/etc/hydra-authz/hydra-authz.toml"]
ENTRYPOINT ["/usr/local/bin/hydra-authz"]
CMD ["--config", "/etc/hydra-authz/hydra-authz.toml"]
