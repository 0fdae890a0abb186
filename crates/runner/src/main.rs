//! `bg-agent-runner`: runs the one task its environment describes, in the current
//! directory (see `bg_agent_core::protocol` for what it is given and what it reports).
//! The server's `bg-agent runner` is the same program; this binary is what a runner image
//! holds.

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    match bg_agent_runner::run_from_env().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bg-agent runner: {e:#}");
            ExitCode::FAILURE
        }
    }
}
