//! Any text given to the configuration parser yields a configuration or an error, never a
//! panic; an error always says where it is.
#![no_main]

use std::path::Path;

use herd_config::FarmConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Err(error) = FarmConfig::parse(text, Path::new("fuzz.toml")) {
        assert!(!error.to_string().is_empty());
    }
});
