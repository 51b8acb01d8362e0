//! No input makes the parser panic, and every rejection says where.

use proptest::prelude::*;

use super::{parse, BASE};

/// A `[membership]` table setting every key, appended to `BASE` for mutation.
const MEMBERSHIP: &str =
    "\n[membership]\nheartbeat_ms = 100\ndead_after_ms = 500\ndrain_s = 30\nquorum = false\n";

/// A `[dataplane]` table setting every key, appended to `BASE` for mutation.
const DATAPLANE: &str =
    "\n[dataplane]\nmode = \"afxdp\"\ncores = [0, 1]\nzero_copy = \"auto\"\nbatch = 64\n";

/// Two `[[check]]` entries and a `[scripts]` table setting every key, appended to `BASE` for
/// mutation.
const CHECKS: &str = "\n[[check]]\nname = \"web\"\nkind = \"http\"\nurl = \"http://[::1]:80/\"\n\
    status = \"200-399\"\nbody = \"ok\"\ninterval_ms = 1000\ntimeout_ms = 500\nfall = 3\nrise = 2\n\
    action = \"restart\"\n[[check]]\nname = \"app\"\nkind = \"process\"\ncommand = \"^app( |$)\"\n\
    at_least = 1\nat_most = 2\n[scripts]\nstart = \"start\"\nstop = \"stop\"\ntimeout_s = 60\n\
    restart_limit = { count = 3, within_s = 86400 }\n";

/// One edit of a text, applied at a byte position taken modulo the text's length.
#[derive(Clone, Debug)]
enum Edit {
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
    Replace(usize, u8),
}

/// Bytes that are likely to matter to TOML, and some that are not.
fn interesting_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        prop::sample::select(b"[]{}=\"',.#\n\r\t -_0123456789abcdefxyz:*\\".to_vec()),
        any::<u8>(),
    ]
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (
            any::<usize>(),
            prop::collection::vec(interesting_byte(), 1..8)
        )
            .prop_map(|(at, bytes)| Edit::Insert(at, bytes)),
        (any::<usize>(), 1..16usize).prop_map(|(at, len)| Edit::Delete(at, len)),
        (any::<usize>(), interesting_byte()).prop_map(|(at, byte)| Edit::Replace(at, byte)),
    ]
}

fn apply(text: &str, edits: &[Edit]) -> String {
    let mut bytes = text.as_bytes().to_vec();
    for edit in edits {
        let len = bytes.len();
        match edit {
            Edit::Insert(at, new) => {
                let at = at % (len + 1);
                bytes.splice(at..at, new.iter().copied());
            }
            Edit::Delete(at, count) if len > 0 => {
                let at = at % len;
                bytes.drain(at..(at + count).min(len));
            }
            Edit::Replace(at, byte) if len > 0 => bytes[at % len] = *byte,
            Edit::Delete(..) | Edit::Replace(..) => {}
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Parses `text`; it may be accepted or rejected, but a rejection must be well formed.
fn check(text: &str) {
    if let Err(error) = parse(text) {
        let lines = text.split('\n').count();
        let (line, column) = error.location.expect("every parse error has a location");
        assert!(
            (1..=lines).contains(&line) && column >= 1,
            "{error}\n{text}"
        );
        assert!(
            !error.key.is_empty() && !error.message.is_empty(),
            "{error}"
        );
        let _ = error.to_string();
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        check(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn random_toml_like_text_never_panics(bytes in prop::collection::vec(interesting_byte(), 0..512)) {
        check(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn mutations_of_a_valid_file_never_panic(edits in prop::collection::vec(edit(), 1..6)) {
        check(&apply(BASE, &edits));
    }

    #[test]
    fn mutations_of_a_membership_table_never_panic(edits in prop::collection::vec(edit(), 1..6)) {
        check(&apply(&format!("{BASE}{MEMBERSHIP}"), &edits));
    }

    #[test]
    fn mutations_of_checks_and_scripts_never_panic(edits in prop::collection::vec(edit(), 1..6)) {
        check(&apply(&format!("{BASE}{CHECKS}"), &edits));
    }

    #[test]
    fn mutations_of_a_dataplane_table_never_panic(edits in prop::collection::vec(edit(), 1..6)) {
        check(&apply(&format!("{BASE}{DATAPLANE}"), &edits));
    }
}

#[test]
fn the_texts_mutated_are_valid_before_mutation() {
    for tables in [MEMBERSHIP, DATAPLANE, CHECKS] {
        let text = format!("{BASE}{tables}");
        let config = parse(&text).unwrap_or_else(|error| panic!("{error}\n{text}"));
        if tables == CHECKS {
            assert_eq!(config.checks.len(), 2);
            assert_eq!(config.scripts.start.as_deref(), Some("start"));
        }
    }
}
