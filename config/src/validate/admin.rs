//! The `[admin]` table.

use std::net::SocketAddr;
use std::path::PathBuf;

use toml::Spanned;

use super::{invalid, required};
use crate::locate::Source;
use crate::raw::RawAdmin;
use crate::{Admin, ConfigError, Console, ValueError};

/// What the path of the console's secret file may be.
const SECRET_FILE: &str = "the path of the console's secret file";

/// What the address of the metrics server or of the console may be.
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
    let raw = admin.get_ref();
    let metrics = match &raw.metrics {
        Some(metrics) => Some(
            listen_address(&metrics.get_ref().0)
                .map_err(|error| invalid(source, metrics.span(), "admin.metrics", error))?,
        ),
        None => None,
    };
    let console = match &raw.console {
        Some(console) => {
            let address = listen_address(&console.get_ref().0)
                .map_err(|error| invalid(source, console.span(), "admin.console", error))?;
            let secret_file = required(
                &raw.console_secret_file,
                admin,
                "admin.console_secret_file",
                "the path of the console's secret file, which the console needs",
                source,
            )?;
            if secret_file.get_ref().is_empty() {
                let error = ValueError::new("the path is empty", SECRET_FILE);
                return Err(invalid(
                    source,
                    secret_file.span(),
                    "admin.console_secret_file",
                    error,
                ));
            }
            Some(Console {
                address,
                secret_file: PathBuf::from(secret_file.get_ref()),
            })
        }
        None => None,
    };
    Ok(Admin { metrics, console })
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
