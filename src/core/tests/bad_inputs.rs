//! Every bad input in tests/fixtures/bad gives its typed error (see the README
//! there), never a panic.

use std::fs;
use std::path::{Path, PathBuf};

use strongroom_core::cipher::{Cipher, CipherError, CipherSpec};
use strongroom_core::file::{decrypt_file, FileError};
use strongroom_core::filename::{FilenameKey, NameError};
use strongroom_core::header::HeaderError;
use strongroom_core::kdf::{derive_skek, Passphrase, Skek, DEFAULT_SALT};
use strongroom_core::keys::{KeyError, KeySet};
use strongroom_core::packet::PacketError;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn skek() -> Skek {
    let text = fs::read(fixtures().join("kernel/passphrase.txt")).unwrap();
    derive_skek(&Passphrase::from_first_line(&text).unwrap(), &DEFAULT_SALT)
}

fn decrypt(name: &str, keys: &KeySet) -> FileError {
    let mut f = fs::File::open(fixtures().join("bad").join(name)).unwrap();
    match decrypt_file(&mut f, None, keys, &mut Vec::new()) {
        Ok(n) => panic!("{name}: decrypted {n} bytes"),
        Err(e) => e,
    }
}

fn packet_error(e: FileError) -> PacketError {
    match e {
        FileError::Header(HeaderError::Packet(p)) => p,
        other => panic!("not a packet error: {other:?}"),
    }
}

#[test]
fn bad_files() {
    let mut keys = KeySet::new();
    keys.add_passphrase(skek());
    let header = |name| match decrypt(name, &keys) {
        FileError::Header(h) => h,
        other => panic!("{name}: {other:?}"),
    };
    assert_eq!(header("bad-marker"), HeaderError::NotEcryptfs);
    assert_eq!(header("plain-file"), HeaderError::NotEcryptfs);
    assert_eq!(header("bad-version"), HeaderError::UnsupportedVersion(4));
    assert_eq!(header("small-metadata"), HeaderError::BadMetadataSize(0));
    let packet = |name| packet_error(decrypt(name, &keys));
    assert!(matches!(
        packet("truncated-header"),
        PacketError::Truncated(_)
    ));
    assert!(matches!(packet("len-overrun"), PacketError::Truncated(_)));
    assert_eq!(packet("len-ff"), PacketError::LengthForm(0xff));
    assert_eq!(packet("len-e0"), PacketError::LengthForm(0xe0));
    assert!(matches!(
        packet("len-too-short"),
        PacketError::Malformed { tag: 0x8c, .. }
    ));
    assert!(matches!(
        packet("unknown-cipher"),
        PacketError::Cipher {
            source: CipherError::UnknownCode(5),
            ..
        }
    ));
    assert!(matches!(
        packet("efek-too-long"),
        PacketError::EfekTooLong { len: 65, .. }
    ));
    assert_eq!(packet("no-packets"), PacketError::NoKeyPackets);
    assert_eq!(packet("orphan-tag11"), PacketError::OrphanTag11(0));
    assert!(matches!(
        decrypt("truncated-data", &keys),
        FileError::DataTruncated { extent: 1 }
    ));
    match decrypt("unknown-sig", &keys) {
        FileError::Key(KeyError::NoKey { sigs }) => {
            assert_eq!(sigs.len(), 1);
            assert_ne!(sigs[0], skek().sig());
        }
        other => panic!("unknown-sig: {other:?}"),
    }
}

#[test]
fn bad_names() {
    let fnek = FilenameKey::new(skek(), CipherSpec::new(Cipher::Aes, 16).unwrap()).unwrap();
    let table = fs::read_to_string(fixtures().join("bad/names.tsv")).unwrap();
    let mut seen = [0; 3];
    for line in table.lines() {
        let (kind, name) = line.split_once('\t').unwrap();
        let got = fnek.decrypt(name.as_bytes());
        let ok = match kind {
            "not-encrypted" => got == Err(NameError::NotEncrypted),
            "corrupt" => matches!(got, Err(NameError::Corrupt(_))),
            "wrong-key" => {
                matches!(got, Err(NameError::WrongKey { sig }) if sig.to_hex() == "5e96f49bf0caf1dd")
            }
            other => panic!("unknown kind {other}"),
        };
        assert!(ok, "{kind} {name}: got {got:?}");
        seen[["not-encrypted", "corrupt", "wrong-key"]
            .iter()
            .position(|k| *k == kind)
            .unwrap()] += 1;
    }
    assert_eq!(seen, [3, 5, 1]);
}
