//! Name decoding/decryption never panics, for arbitrary lower names, and names that
//! decrypt re-encrypt to a name that decrypts to the same plaintext.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use strongroom_core::cipher::{Cipher, CipherSpec};
use strongroom_core::filename::{decode, FilenameKey, FNEK_PREFIX};
use strongroom_core::kdf::Skek;

fn keys() -> &'static [FilenameKey] {
    static KEYS: OnceLock<Vec<FilenameKey>> = OnceLock::new();
    KEYS.get_or_init(|| {
        // A fixed SKEK (the KDF is too slow to run per input); one key per block size.
        let skek = Skek::from_bytes([0x42; 64]);
        [(Cipher::Aes, 16), (Cipher::Blowfish, 16)]
            .into_iter()
            .map(|(c, n)| FilenameKey::new(skek.clone(), CipherSpec::new(c, n).unwrap()).unwrap())
            .collect()
    })
}

fuzz_target!(|data: &[u8]| {
    let _ = decode(data);
    for k in keys() {
        let _ = k.decrypt(data);
        // Also feed the bytes as a packet behind the prefix, so the parser is reached.
        let mut name = FNEK_PREFIX.as_bytes().to_vec();
        name.extend_from_slice(strongroom_core::filename::encode(data).as_bytes());
        if let Ok(plain) = k.decrypt(&name) {
            let again = k.encrypt(&plain).expect("decrypted names re-encrypt");
            assert_eq!(k.decrypt(&again).unwrap(), plain);
        }
        if !data.is_empty() {
            if let Ok(n) = k.encrypt(data) {
                assert_eq!(k.decrypt(&n).unwrap(), data);
            }
        }
    }
});
