//! Fuzzes the sync frame decoder: it must never panic, and every frame it
//! accepts must re-encode to exactly the bytes it was decoded from.
#![no_main]

use floatlb_sync::packet::{SyncKey, decode, encode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let key = SyncKey::new(b"fuzz-key-0123456789", "fuzz").expect("key");
    // The first 8 bytes choose the session nonce; the rest is the frame.
    let Some((nonce, frame)) = data.split_first_chunk::<8>() else {
        return;
    };
    let nonce = u64::from_be_bytes(*nonce);
    let _ = floatlb_sync::packet::frame_len(frame);
    if let Ok((f, used)) = decode(&key, nonce, frame) {
        // Reserved bytes are ignored on receipt, so compare re-encodings.
        let again = encode(&key, nonce, f.seq, &f.msg);
        assert_eq!(decode(&key, nonce, &again), Ok((f, again.len())));
        assert_eq!(again.len(), used);
    }
});
