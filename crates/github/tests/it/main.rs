//! The GitHub App client against the fake GitHub, through the real octocrab client.

mod client;
