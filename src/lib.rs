//! bg-agent: a GitHub App that runs background coding tasks.
//!
//! Module map (see DESIGN.md): `command` (pure grammar), `webhook` (HMAC, intake,
//! payload → trigger), `store` (every SQL statement), `engine` (workers),
//! `web` (HTTP router), `config` (typed configuration).

pub mod app;
pub mod command;
pub mod config;
pub mod engine;
pub mod openapi;
pub mod store;
pub mod web;
pub mod webhook;
