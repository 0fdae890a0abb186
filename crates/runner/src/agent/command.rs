//! The generic `command` provider: a configured program (argv, no shell) run in the
//! checkout with the prompt on stdin; its output is logged as it is. It gets the
//! credential as `BG_AGENT_AGENT_CREDENTIAL`'s value in `AGENT_API_KEY`.

use super::{AgentError, Invocation, Observation};
use bg_agent_core::protocol::TaskSpec;

pub fn invocation(spec: &TaskSpec, prompt: &str) -> Result<Invocation, AgentError> {
    let argv = spec
        .agent_command
        .clone()
        .filter(|argv| argv.first().is_some_and(|p| !p.is_empty()))
        .ok_or(AgentError::NoAgent)?;
    Ok(Invocation {
        argv,
        env: Vec::new(),
        credential_var: Some("AGENT_API_KEY"),
        stdin: Some(prompt.to_owned()),
        home_files: Vec::new(),
    })
}

pub fn observe(line: &str, _seen: &mut Observation) -> Option<String> {
    Some(line.to_owned())
}
