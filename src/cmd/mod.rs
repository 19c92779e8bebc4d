//! One module per CLI command; `main.rs` only parses arguments and dispatches.

pub mod check;
pub mod config;
pub mod health;
pub mod purge;
pub mod rules;
pub mod token;
