//! Producer signature headers: any header bytes are rejected with a reason (never
//! accepted without the key), never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::collections::BTreeMap;
use vigil_actors::signing::Verifier;

fuzz_target!(|data: &[u8]| {
    let v = Verifier::new(BTreeMap::from([("pay-api".to_string(), b"key".to_vec())]), 60_000, 60_000, 16);
    let split = data.len() / 2;
    assert!(v.verify(Some(data), &data[..split], b"k", &data[split..], 0).is_err());
});
