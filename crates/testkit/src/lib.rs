//! Test support shared by bg-agent's crates (a dev-dependency only): a fresh migrated
//! database per test ([`db`]), the fixtures' world ([`fixtures`]), and a webhook server
//! whose trigger handler records what it is given ([`recording`]), and the scenario
//! harness: the fake GitHub, the real server and engine, driven as people do ([`harness`]);
//! a TCP forwarder that can be cut to stage an outage ([`tcp_proxy`]); the server as a
//! process of its own, to be killed ([`server_process`]); a real Kubernetes control plane
//! from `scripts/envtest.sh` ([`envtest`]) and a stand-in kubelet that runs our Jobs' Pods
//! on it ([`kubelet`]).

pub mod bench;
pub mod db;
pub mod envtest;
pub mod fixtures;
pub mod harness;
pub mod kubelet;
pub mod model_api;
pub mod process;
pub mod recording;
pub mod server_process;
pub mod tcp_proxy;
