//! The probes: each looks once at one thing the application needs and says whether it is
//! fine, within a timeout. They block; the checker thread runs them one at a time. What they
//! look at comes as plain values, so that each is tested against a real target.

mod address;
mod command;
mod http;
mod interface;
mod ping;
mod process;
mod tcp;

pub use address::addresses;
pub use command::{run, Finished};
pub use http::{http, Expect};
pub use interface::interface;
pub use ping::ping;
pub use process::{process, Matcher};
pub use tcp::tcp;

/// Why a probe found something wrong, for the log.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ProbeError(pub String);

impl ProbeError {
    fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

/// What a probe says.
pub type Probed = Result<(), ProbeError>;
