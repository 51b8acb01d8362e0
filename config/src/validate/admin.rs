//! The `[admin]` table.

use std::net::SocketAddr;

use toml::Spanned;

use super::invalid;
use crate::locate::Source;
use crate::raw::RawAdmin;
use crate::{Admin, ConfigError, ValueError};

/// What the address of the metrics server may be.
const LISTEN: &str = "an IP address and a port from 1 to 65535, such as \"127.0.0.1:9477\", \
                      \"0.0.0.0:9477\" or \"[::1]:9477\" (host names are not resolved)";

/// Where this node is watched from; [`Admin::default`] when the file has no `[admin]`.
pub(super) fn check_admin(
    admin: Option<&Spanned<RawAdmin>>,
    source: &Source<'_>,
) -> Result<Admin, ConfigError> {
    let Some(admin) = admin else {
        return Ok(Admin::default());
    };
    let metrics = match &admin.get_ref().metrics {
        Some(metrics) => Some(
            listen_address(&metrics.get_ref().0)
                .map_err(|error| invalid(source, metrics.span(), "admin.metrics", error))?,
        ),
        None => None,
    };
    Ok(Admin { metrics })
}

/// An address a server can listen on: a local address, or the unspecified one for all, and a
/// fixed port.
fn listen_address(text: &str) -> Result<SocketAddr, ValueError> {
    let address: SocketAddr = text.parse().map_err(|_| {
        let problem = if text.parse::<std::net::IpAddr>().is_ok() {
            format!("`{}` has no port", text.escape_debug())
        } else {
            format!("`{}` is not an IP address and port", text.escape_debug())
        };
        ValueError::new(problem, LISTEN)
    })?;
    if address.port() == 0 {
        // Port 0 would make the kernel pick one, which nothing polling the node could know.
        return Err(ValueError::new(format!("`{text}` has port 0"), LISTEN));
    }
    if address.ip().is_multicast() {
        return Err(ValueError::new(
            format!("`{text}` is a multicast address"),
            LISTEN,
        ));
    }
    Ok(address)
}
