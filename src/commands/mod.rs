//! One module per `herd` command.

pub mod check_config;
pub mod run;
pub mod table;
pub mod whois;
