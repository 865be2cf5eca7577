//! Fuzzes the BFD Control packet decoder: it must never panic, and every
//! packet it accepts must re-encode to the bytes it was decoded from.
#![no_main]

use floatlb_bfd::packet::Packet;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(pkt) = Packet::decode(data) {
        let mut expected = data[..usize::from(data[3])].to_vec();
        if let Some(reserved) = expected.get_mut(27) {
            *reserved = 0; // auth Reserved byte: "ignored on receipt"
        }
        assert_eq!(pkt.encode(), expected, "accepted packet does not round-trip");
        assert_eq!(Packet::decode(&pkt.encode()), Ok(pkt));
    }
});
