//! Packet-set and length parsing never panic; parsed sets round-trip.
#![no_main]
use libfuzzer_sys::fuzz_target;
use strongroom_core::packet::{decode_len, parse_packet_set_len, write_packet_set};

fuzz_target!(|data: &[u8]| {
    let _ = decode_len(data);
    if let Ok((packets, used)) = parse_packet_set_len(data) {
        let mut out = Vec::new();
        write_packet_set(&packets, &mut out).expect("parsed packets are writable");
        // Re-encoding may pick the shorter length form, so compare packets, not bytes.
        let (again, n) = parse_packet_set_len(&out).expect("written packets parse");
        assert_eq!(again, packets);
        assert!(n <= used);
    }
});
