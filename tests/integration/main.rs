//! Every integration suite that needs no process-global state, linked into one
//! test binary: one link instead of a dozen keeps the build small and fast.
//! Suites that install a global tracing subscriber or change the process
//! environment (config, logs_never_contain_tokens, otel_traces_*) stay in
//! their own binaries at the top of `tests/`.

#[path = "../support/mod.rs"]
mod support;

mod cache;
mod cli_serve;
mod cli_tools;
mod demo;
mod e2e_envoy;
mod e2e_faults;
mod e2e_hardening;
mod fleet;
mod forward_auth;
mod grpc_server;
mod hardening;
mod health;
mod hydra_contract;
mod identity;
mod identity_policy;
mod jwt;
mod metrics;
mod otel_env;
mod properties;
mod real_hydra;
mod reload;
mod resilience;
mod tls;
