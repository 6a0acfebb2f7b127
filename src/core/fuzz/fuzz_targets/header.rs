//! Header parsing (file and xattr forms) and re-serialisation never panic; what
//! parses re-serialises to bytes that parse to the same header.
#![no_main]
use libfuzzer_sys::fuzz_target;
use strongroom_core::header::Header;

fuzz_target!(|data: &[u8]| {
    let _ = Header::peek_size(data);
    if let Ok(h) = Header::parse(data) {
        let _ = h.lower_data_offset();
        let _ = h.to_file_bytes();
        if let Ok(bytes) = h.to_xattr_bytes() {
            // The writer always says 4096 x n, so odd extent sizes do not survive.
            if let (Ok(back), true) = (Header::parse(&bytes), h.metadata_size % 4096 == 0) {
                assert_eq!(back, h);
            } else if let Ok(back) = Header::parse(&bytes) {
                assert_eq!(
                    (back.size, back.flags, &back.packets),
                    (h.size, h.flags, &h.packets)
                );
            }
        }
    }
});
