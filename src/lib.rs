//! bg-agent: a GitHub App that runs background coding tasks.
//!
//! Module map (see DESIGN.md): `command` (pure grammar), `task` (pure life cycle and templates), `webhook` (HMAC, intake,
//! payload → trigger), `store` (every SQL statement), `engine` (workers),
//! `web` (HTTP router), `config` (typed configuration), `github` (the App's GitHub client),
//! `github_sim` (a strict fake GitHub for tests and local use).

pub mod app;
pub mod command;
pub mod config;
pub mod demo;
pub mod engine;
pub mod executor;
pub mod github;
pub mod github_sim;
pub mod openapi;
pub mod runner;
pub mod store;
pub mod task;
pub mod web;
pub mod webhook;
