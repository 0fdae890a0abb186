//! bg-agent's pure core: what the product means, with no I/O. The `/bg-agent` grammar
//! ([`command`]), the task model and templates ([`task`]) and the protocol between the
//! server and a runner ([`protocol`]). See ARCHITECTURE.md for the map of the crates.

pub mod command;
pub mod protocol;
pub mod task;
