//! The server's integration tests, one binary: each module is one part of the product
//! exercised for real (PostgreSQL, git, the runner, the fake GitHub through the real client).

mod agents;
mod api;
mod browser;
mod cli;
mod credentials;
mod embedded_postgres;
mod engine_e2e;
mod engine_security;
mod engine_triggers;
mod faults;
mod harness;
mod hostile_text;
mod kubernetes;
mod kubernetes_deploy;
mod listing;
mod local_executor;
mod migrations;
mod pull_request_state;
mod repo_contract;
mod report_faults;
mod retention;
mod runner;
mod runner_api;
mod runner_image;
mod sandbox;
mod scope_guard;
mod settings;
mod task_store;
mod web_auth;
mod webhook_decode;
mod webhook_intake;
mod webhook_limits;
