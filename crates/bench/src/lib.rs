//! Shared parts of the benchmark binaries: the server under test as a child process, and
//! the fleet of phone replicas.

pub mod fleet;
pub mod server;
