//! `tcp`: a connection to an address is accepted.

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use super::{ProbeError, Probed};

/// Whether a TCP connection to `address` is accepted within `timeout`.
pub fn tcp(address: SocketAddr, timeout: Duration) -> Probed {
    TcpStream::connect_timeout(&address, timeout)
        .map(drop)
        .map_err(|error| ProbeError::new(format!("cannot connect to {address}: {error}")))
}
