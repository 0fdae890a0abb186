//! Test support shared by bg-agent's crates (a dev-dependency only): a fresh migrated
//! database per test ([`db`]), the fixtures' world ([`fixtures`]), and a webhook server
//! whose trigger handler records what it is given ([`recording`]).

pub mod db;
pub mod fixtures;
pub mod process;
pub mod recording;
