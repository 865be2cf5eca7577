//! Fuzzes the sync frame decoder: it must never panic, and every frame it
//! accepts must re-encode to a frame that decodes to the same thing.
//!
//! Input byte 0 picks the mode. Raw: the rest is a frame as received
//! (header checks and the MAC check). Sealed: byte 1 is the kind and the
//! rest the body, wrapped in a correct header and MAC by `seal`, so the
//! body parsers behind the MAC check are reached too.
#![no_main]

use floatlb_sync::packet::{SyncKey, decode, encode, frame_len, seal};
use libfuzzer_sys::fuzz_target;

const NONCE: u64 = 0x0102_0304_0506_0708;

fuzz_target!(|data: &[u8]| {
    let key = SyncKey::new(b"fuzz-key-0123456789", "fuzz").expect("key");
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let frame = if mode & 1 == 0 {
        let _ = frame_len(rest);
        rest.to_vec()
    } else {
        let Some((&kind, body)) = rest.split_first() else {
            return;
        };
        seal(&key, NONCE, kind, 7, body)
    };
    if let Ok((f, used)) = decode(&key, NONCE, &frame) {
        assert_eq!(used, frame.len().min(used));
        // Reserved bytes are ignored on receipt, so compare re-encodings.
        let again = encode(&key, NONCE, f.seq, &f.msg);
        assert_eq!(decode(&key, NONCE, &again), Ok((f, again.len())));
    }
});
