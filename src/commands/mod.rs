//! One module per `herd` command.

pub mod check_config;
pub mod demo;
pub mod farm;
pub mod run;
pub mod status;
pub mod table;
pub mod whois;
