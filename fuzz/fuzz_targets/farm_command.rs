//! Any frame given to the farm command and reply decoders, and to the command gate, is a
//! command, a reply or an error, never a panic: as it arrives (the tag fails for nearly all of
//! them), and tagged with the farm's key, so that the fuzzer also reaches the fields behind
//! the authentication. A decoded frame encodes back to the same bytes.
#![no_main]

use herd_membership::auth::Keyring;
use herd_membership::command::{Command, CommandGate, Reply};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let keys = Keyring::parse("1 000102030405060708090a0b0c0d0e0f").expect("a valid key");
    let mut gate = CommandGate::new(keys.clone(), [0; 32], vec!["a".into(), "b".into()], 0, 0);
    let _ = gate.accept(data, 0);
    let mut signed = data.to_vec();
    signed.extend_from_slice(&keys.signing().tag(data));
    let _ = gate.accept(&signed, 0);
    if let Ok(command) = Command::decode(&signed, &keys) {
        assert_eq!(command.encode(&keys).as_deref(), Some(&signed[..]));
    }
    if let Ok(reply) = Reply::decode(&signed, &keys) {
        assert_eq!(reply.encode(&keys).as_deref(), Some(&signed[..]));
    }
});
