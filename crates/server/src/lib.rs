//! The bg-agent server: webhook intake, the engine that turns triggers into tasks and
//! drives them, the executors that run the runner, the store, and the web surface.
//! ARCHITECTURE.md (at the repository's root) maps the crates and their boundaries.

pub mod app;
pub mod background;
pub mod config;
pub mod credentials;
pub mod engine;
pub mod executor;
pub mod github_app;
pub mod metrics;
pub mod store;
mod unix_access;
pub mod web;
pub mod webhook;
