//! bg-agent's pure core: what the product means, with no I/O. The `/bg-agent` grammar
//! ([`command`]), the task model and templates ([`task`]), the protocol between the
//! server and a runner ([`protocol`]), and the one retry [`backoff`] policy. See
//! ARCHITECTURE.md for the map of the crates.

pub mod backoff;
pub mod command;
pub mod markdown;
pub mod output;
pub mod protocol;
pub mod task;
