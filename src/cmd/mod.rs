//! One module per CLI command; `main.rs` only parses arguments and dispatches.

pub mod check;
pub mod config;
pub mod health;
pub mod purge;
pub mod rules;
pub mod token;

// Operator helpers, beside the commands that use them (`rules from-openapi`,
// `config check --openapi/--envoy`); the server never needs them.
pub(crate) mod envoy_routes;
pub(crate) mod openapi;
