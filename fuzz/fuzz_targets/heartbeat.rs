//! Any datagram given to the heartbeat decoder is a heartbeat or an error, never a panic: as
//! it arrives (the tag fails for nearly all of them), and tagged with the farm's key, so that
//! the fuzzer also reaches the fields behind the authentication. A decoded heartbeat encodes
//! back to the same datagram.
#![no_main]

use herd_membership::auth::{Keyring, TAG_LEN};
use herd_membership::wire::Heartbeat;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let keys = Keyring::parse("1 000102030405060708090a0b0c0d0e0f").expect("a valid key");
    let _ = Heartbeat::decode(data, &keys);
    let mut signed = data.to_vec();
    signed.extend_from_slice(&keys.signing().tag(data));
    if let Ok(heartbeat) = Heartbeat::decode(&signed, &keys) {
        let again = heartbeat.encode(&keys).expect("a decoded heartbeat fits the layout");
        assert_eq!(again, signed);
        assert_eq!(again.len() - TAG_LEN, data.len());
    }
});
