# hydra-authz container image.
#
#   docker build -t hydra-authz .
#   docker run --rm -p 9191:9191 -p 9192:9192 \
#     -e HYDRA_AUTHZ_SERVER__GRPC_ADDR=0.0.0.0:9191 \
#     -e HYDRA_AUTHZ_SERVER__HTTP_ADDR=0.0.0.0:9192 \
#     -e HYDRA_AUTHZ_INTROSPECTION__URL=http://hydra:4445/admin/oauth2/introspect \
#     hydra-authz
#
# The build step is exactly the release build the project uses
# (`cargo build --release --locked`: Cargo.lock is honoured, protoc is vendored
# by build.rs, so the builder needs nothing beyond the Rust image). No container
# engine runs in CI; deploy/tests/test_dockerfile.py parses this file with
# BuildKit's own parser, lints it with hadolint and checks that the build
# command and the non-root user stay as they are.

# ---- build ------------------------------------------------------------------
FROM rust:1-bookworm AS builder
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
# 9191: gRPC (Envoy ext_authz, grpc.health.v1.Health, admin Explain)
# 9192: HTTP (GET /healthz, GET /readyz, GET /metrics)
EXPOSE 9191 9192
# No Docker HEALTHCHECK: the image has no shell or curl, and hydra-authz has
# no health-probe subcommand. Health is checked from outside: Kubernetes
# probes (httpGet /healthz and /readyz on 9192, or gRPC health on 9191, see
# deploy/helm/hydra-authz), Envoy/Istio gRPC health checks, or any HTTP
# check against :9192/readyz.
HEALTHCHECK NONE
ENTRYPOINT ["/usr/local/bin/hydra-authz"]
CMD ["--config", "/etc/hydra-authz/hydra-authz.toml"]
