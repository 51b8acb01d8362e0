//! Attachments pinned on a BPF file system, so that they outlive the herd that made them: a
//! killed herd leaves its programs attached (the node fails closed), and the next herd
//! replaces them.

use std::path::{Path, PathBuf};

use aya::programs::links::{FdLink, PinnedLink};

/// An attachment could not be pinned, found or unpinned.
#[derive(Debug, thiserror::Error)]
#[error("cannot pin or unpin the attachment at {path}: {message}")]
pub struct PinError {
    /// Where.
    pub path: PathBuf,
    /// Why.
    pub message: String,
}

/// An attachment pinned at a path; it stays attached until [`Pin::remove`].
#[derive(Debug)]
pub struct Pin {
    link: PinnedLink,
    path: PathBuf,
}

impl Pin {
    /// Pins `link` at `path`.
    pub fn new(link: FdLink, path: &Path) -> Result<Self, PinError> {
        let link = link.pin(path).map_err(|error| error_at(path, error))?;
        Ok(Self {
            link,
            path: path.to_owned(),
        })
    }

    /// Removes the pin and detaches the program.
    pub fn remove(self) -> Result<(), PinError> {
        // Dropping the link the unpin gives back detaches the program.
        self.link
            .unpin()
            .map(drop)
            .map_err(|error| error_at(&self.path, error))
    }

    /// Detaches the program a previous herd left pinned at `path` (it was killed); whether
    /// there was one.
    pub fn remove_stale(path: &Path) -> Result<bool, PinError> {
        if !path.exists() {
            return Ok(false);
        }
        let link = PinnedLink::from_pin(path).map_err(|error| error_at(path, error))?;
        Self {
            link,
            path: path.to_owned(),
        }
        .remove()?;
        Ok(true)
    }
}

fn error_at(path: &Path, error: impl std::fmt::Display) -> PinError {
    PinError {
        path: path.to_owned(),
        message: error.to_string(),
    }
}
