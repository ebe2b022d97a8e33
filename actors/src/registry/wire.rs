//! Confluent's wire format: magic byte `0`, the schema id as 4 big-endian bytes, then the
//! payload (Avro binary or JSON text).

/// The only magic byte Confluent framing defines.
pub const MAGIC: u8 = 0;
/// Bytes before the payload.
pub const HEADER_LEN: usize = 5;

/// Why a value is not Confluent-framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// Fewer than 5 bytes.
    TooShort(usize),
    /// First byte is not 0.
    BadMagic(u8),
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::TooShort(n) => write!(f, "value has {n} bytes; Confluent framing needs at least {HEADER_LEN} (magic byte 0 + 4-byte schema id)"),
            FrameError::BadMagic(b) => write!(f, "magic byte is 0x{b:02x}, expected 0x00 (not Confluent-framed)"),
        }
    }
}

/// Split a framed value into schema id and payload.
///
/// # Errors
/// [`FrameError`] when the value is not framed.
pub fn unframe(value: &[u8]) -> Result<(u32, &[u8]), FrameError> {
    if value.len() < HEADER_LEN {
        return Err(FrameError::TooShort(value.len()));
    }
    if value[0] != MAGIC {
        return Err(FrameError::BadMagic(value[0]));
    }
    let id = u32::from_be_bytes([value[1], value[2], value[3], value[4]]);
    Ok((id, &value[HEADER_LEN..]))
}

/// Frame a payload with a schema id.
pub fn frame(id: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.push(MAGIC);
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #[test]
        fn frame_roundtrips(id in proptest::prelude::any::<u32>(), payload in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
            let framed = frame(id, &payload);
            proptest::prop_assert_eq!(unframe(&framed), Ok((id, payload.as_slice())));
        }

        #[test]
        fn unframe_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..16)) {
            let _ = unframe(&bytes);
        }
    }

    #[test]
    fn errors_say_why() {
        assert_eq!(unframe(b"{}"), Err(FrameError::TooShort(2)));
        assert_eq!(unframe(b"{\"a\":1}"), Err(FrameError::BadMagic(b'{')));
    }
}
