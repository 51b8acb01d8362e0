//! Which node this host is.

use super::{ip, parse, BASE};
use crate::{FarmConfig, IdentifyError};

fn config() -> FarmConfig {
    parse(BASE).unwrap_or_else(|error| panic!("{error}"))
}

#[test]
fn a_given_name_picks_that_node_whatever_the_addresses() {
    assert_eq!(config().identify(Some("bravo"), &[]), Ok(1));
    assert_eq!(config().identify(Some("alpha"), &[ip("198.18.0.2")]), Ok(0));
}

#[test]
fn an_unknown_name_lists_the_configured_ones() {
    let error = config().identify(Some("charlie"), &[ip("198.18.0.1")]);
    assert_eq!(
        error,
        Err(IdentifyError::UnknownName {
            name: "charlie".to_owned(),
            known: vec!["alpha".to_owned(), "bravo".to_owned()],
        })
    );
    let message = error.map_err(|e| e.to_string()).expect_err("unknown");
    assert!(
        message.contains("alpha, bravo") && message.contains("--node"),
        "{message}"
    );
}

#[test]
fn without_a_name_the_local_address_decides() {
    let local = [
        ip("127.0.0.1"),
        ip("fe80::1"),
        ip("198.18.0.2"),
        ip("198.18.0.100"),
    ];
    assert_eq!(config().identify(None, &local), Ok(1));
}

#[test]
fn no_local_node_address_is_an_error_listing_the_local_addresses() {
    let local = [ip("127.0.0.1"), ip("198.18.0.100")];
    let error = config().identify(None, &local);
    assert_eq!(
        error,
        Err(IdentifyError::NoLocalMatch {
            addresses: local.to_vec()
        })
    );
    let message = error.map_err(|e| e.to_string()).expect_err("no match");
    assert!(
        message.contains("127.0.0.1, 198.18.0.100") && message.contains("pass --node NAME"),
        "{message}"
    );
}

#[test]
fn several_local_node_addresses_are_ambiguous() {
    let error = config().identify(None, &[ip("198.18.0.2"), ip("198.18.0.1")]);
    assert_eq!(
        error,
        Err(IdentifyError::Ambiguous {
            names: vec!["alpha".to_owned(), "bravo".to_owned()],
        })
    );
    let message = error.map_err(|e| e.to_string()).expect_err("ambiguous");
    assert!(
        message.contains("alpha, bravo") && message.contains("pass --node NAME"),
        "{message}"
    );
}
