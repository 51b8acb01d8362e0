//! The `[dataplane]` table.

use crate::keyword::Keyword;
use std::collections::HashMap;

use toml::Spanned;

use super::{integer, invalid};
use crate::locate::Source;
use crate::raw::{RawDataplane, RawInt};
use crate::{ConfigError, Dataplane, DataplaneMode, ValueError, ZeroCopy};

/// The packet path settings; [`Dataplane::default`] when the file has no `[dataplane]`.
///
/// Whether the cores exist is not checked: the file is shared by hosts of different sizes, so
/// only `herd run`, on the host itself, can tell.
pub(super) fn check_dataplane(
    dataplane: Option<&Spanned<RawDataplane>>,
    source: &Source<'_>,
) -> Result<Dataplane, ConfigError> {
    let Some(dataplane) = dataplane else {
        return Ok(Dataplane::default());
    };
    let raw = dataplane.get_ref();
    let mode = match &raw.mode {
        Some(mode) => mode.get_ref().parse::<DataplaneMode>().map_err(|error| {
            let error = error.suggesting(mode.get_ref(), DataplaneMode::NAMES);
            invalid(source, mode.span(), "dataplane.mode", error)
        })?,
        None => DataplaneMode::default(),
    };
    let cores = match &raw.cores {
        Some(cores) => check_cores(cores, source)?,
        None => Vec::new(),
    };
    let zero_copy = match &raw.zero_copy {
        Some(zero_copy) => {
            let text = &zero_copy.get_ref().0;
            text.parse::<ZeroCopy>().map_err(|error| {
                let error = error.suggesting(text, ZeroCopy::NAMES);
                invalid(source, zero_copy.span(), "dataplane.zero_copy", error)
            })?
        }
        None => ZeroCopy::default(),
    };
    let batch = match &raw.batch {
        Some(batch) => integer(
            batch,
            1..=i128::from(Dataplane::MAX_BATCH),
            "dataplane.batch",
            source,
        )?,
        None => Dataplane::DEFAULT_BATCH,
    };
    Ok(Dataplane {
        mode,
        cores,
        zero_copy,
        batch,
    })
}

/// The cores, in file order; each once, as a core runs one worker.
fn check_cores(
    cores: &Spanned<Vec<Spanned<RawInt>>>,
    source: &Source<'_>,
) -> Result<Vec<usize>, ConfigError> {
    // Lossless: a usize has at most 64 bits.
    let range = 0..=Dataplane::MAX_CORE as i128;
    let mut seen: HashMap<usize, usize> = HashMap::new();
    let mut checked = Vec::with_capacity(cores.get_ref().len());
    for (index, core) in cores.get_ref().iter().enumerate() {
        let key = format!("dataplane.cores[{index}]");
        let number: usize = integer(core, range.clone(), &key, source)?;
        if let Some(first) = seen.insert(number, index) {
            let error = ValueError::new(
                format!("core {number} is already dataplane.cores[{first}]"),
                "every core once: each core runs one worker",
            );
            return Err(invalid(source, core.span(), &key, error));
        }
        checked.push(number);
    }
    Ok(checked)
}
