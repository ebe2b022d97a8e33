//! The Confluent wire framing (magic byte, schema id): any bytes give a frame or a reason.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vigil_actors::registry::wire;

fuzz_target!(|data: &[u8]| {
    if let Ok((id, body)) = wire::unframe(data) {
        assert_eq!(wire::frame(id, body), data);
    }
});
