//! Decrypts every lower tree the real kernel wrote (tests/fixtures/kernel: AES;
//! tests/fixtures/kernel-ciphers: the other five ciphers; both made by the
//! kernel-oracle VM) and compares with the kernel's plaintexts; then checks that
//! our writer reproduces the kernel's bytes when given the kernel's file keys.

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use strongroom_core::cipher::{Cipher, CipherSpec};
use strongroom_core::extent::EXTENT_SIZE;
use strongroom_core::file::{decrypt_file, FileError};
use strongroom_core::filename::FilenameKey;
use strongroom_core::header::{lower_size_for, Header, HeaderError};
use strongroom_core::kdf::{derive_skek, Passphrase, Salt, Skek, DEFAULT_SALT, FNEK_SALT};
use strongroom_core::keys::{unwrap_fek, wrap_fek, KeySet, WrappingKey};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/kernel")
}

fn skek(salt: &Salt) -> Skek {
    let text = fs::read(fixtures().join("passphrase.txt")).unwrap();
    derive_skek(&Passphrase::from_first_line(&text).unwrap(), salt)
}

/// `key=value` lines of a set's info.txt.
fn info(set: &Path) -> HashMap<String, String> {
    fs::read_to_string(set.join("info.txt"))
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// `getfattr --dump -e hex` output: file -> user.ecryptfs value.
fn xattr_dump(path: &Path) -> HashMap<String, Vec<u8>> {
    let mut out = HashMap::new();
    let mut file = None;
    for line in fs::read_to_string(path).unwrap().lines() {
        if let Some(f) = line.strip_prefix("# file: ") {
            file = Some(f.to_owned());
        } else if let Some(v) = line.strip_prefix("user.ecryptfs=0x") {
            out.insert(
                file.take().expect("value after a file line"),
                hex::decode(v).unwrap(),
            );
        }
    }
    out
}

/// plain path -> sha256, from the fixtures' own SHA256SUMS.
fn plain_sums() -> HashMap<String, String> {
    fs::read_to_string(fixtures().join("SHA256SUMS"))
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once("  "))
        .filter_map(|(h, p)| {
            p.strip_prefix("plain/")
                .map(|p| (p.to_owned(), h.to_owned()))
        })
        .collect()
}

fn walk(dir: &Path, base: &Path, out: &mut BTreeSet<String>) {
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let rel = p.strip_prefix(base).unwrap().to_str().unwrap().to_owned();
        if p.is_dir() {
            walk(&p, base, out);
        }
        out.insert(rel);
    }
}

fn check_set(name: &str) {
    check_set_in(&fixtures(), name);
}

fn check_cipher_set(name: &str) {
    check_set_in(&fixtures().join("../kernel-ciphers"), name);
}

fn check_set_in(root: &Path, name: &str) {
    let set = root.join(name);
    let info = info(&set);
    let key_bytes: usize = info["key_bytes"].parse().unwrap();
    let spec = CipherSpec::new(Cipher::from_name(&info["cipher"]).unwrap(), key_bytes).unwrap();
    let main = skek(&DEFAULT_SALT);
    assert_eq!(main.sig().to_hex(), info["sig"]);
    let mut keys = KeySet::new();
    keys.add_passphrase(main.clone());
    let fnek = match info["fnek"].as_str() {
        "none" => None,
        "same" => Some(main.clone()),
        "separate" => Some(skek(&FNEK_SALT)),
        other => panic!("unknown fnek mode {other}"),
    }
    .map(|s| FilenameKey::new(s, spec).unwrap());
    if let Some(f) = &fnek {
        assert_eq!(f.sig().to_hex(), info["fnek_sig"]);
    }
    let xattr = info["xattr"] == "1";
    let xattrs = if xattr {
        xattr_dump(&set.join("xattrs.dump"))
    } else {
        HashMap::new()
    };
    let sums = plain_sums();
    let lower_root = set.join("lower");
    let mut listed = BTreeSet::new();
    let mut files = 0;

    for line in fs::read_to_string(set.join("names.map")).unwrap().lines() {
        let (lower_rel, plain_rel) = line.split_once('\t').unwrap();
        listed.insert(lower_rel.to_owned());
        // Names: each component decrypts to the kernel's plaintext, and encrypting
        // the plaintext gives the kernel's name (names are deterministic).
        let pairs: Vec<_> = lower_rel.split('/').zip(plain_rel.split('/')).collect();
        assert_eq!(pairs.len(), plain_rel.split('/').count());
        for (l, p) in pairs {
            match &fnek {
                Some(f) => {
                    assert_eq!(
                        f.decrypt(l.as_bytes()).unwrap(),
                        p.as_bytes(),
                        "{name}: {l}"
                    );
                    assert_eq!(
                        f.encrypt(p.as_bytes()).unwrap(),
                        l.as_bytes(),
                        "{name}: {p}"
                    );
                }
                None => assert_eq!(l, p),
            }
        }
        let plain_path = fixtures().join("plain").join(plain_rel);
        let lower_path = lower_root.join(lower_rel);
        if plain_path.is_dir() {
            assert!(lower_path.is_dir(), "{name}: {lower_rel}");
            continue;
        }
        files += 1;
        let want = fs::read(&plain_path).unwrap();
        let x = xattrs.get(lower_rel).map(Vec::as_slice);
        assert_eq!(x.is_some(), xattr, "{name}: xattr for {lower_rel}");
        let mut out = Vec::new();
        let size = decrypt_file(
            &mut fs::File::open(&lower_path).unwrap(),
            x,
            &keys,
            &mut out,
        )
        .unwrap();
        assert_eq!(size, want.len() as u64);
        assert!(
            out == want,
            "{name}: {plain_rel} differs from the kernel's plaintext"
        );
        assert_eq!(
            hex::encode(Sha256::digest(&out)),
            sums[plain_rel],
            "{plain_rel}"
        );

        let lower = fs::read(&lower_path).unwrap();
        let header_src = x.unwrap_or(&lower[..lower.len().min(4096)]);
        let header = Header::parse(header_src).unwrap();
        // The kernel sets 0x08 on files created with filename encryption on.
        let flags = 0x02 | if xattr { 0x04 } else { 0 } | if fnek.is_some() { 0x08 } else { 0 };
        assert_eq!((header.version, header.flags), (3, flags));
        assert_eq!(
            lower.len() as u64,
            lower_size_for(size, header.lower_data_offset())
        );
        check_writer_matches(&header, header_src, &lower, &want, &keys, &main);
    }
    assert!(files >= 9, "{name}: only {files} files checked");
    let mut present = BTreeSet::new();
    walk(&lower_root, &lower_root, &mut present);
    assert_eq!(present, listed, "{name}: names.map and lower/ disagree");

    if xattr {
        // Without its xattr a lower file of this set is no eCryptfs file.
        let mut f = fs::File::open(lower_root.join("f4096")).unwrap();
        assert!(matches!(
            decrypt_file(&mut f, None, &keys, &mut Vec::new()),
            Err(FileError::Header(HeaderError::NotEcryptfs))
        ));
    }
}

/// With the kernel's FEK, our writer must produce the kernel's bytes: the same
/// packets (ECB is deterministic), the same header apart from the random marker,
/// and the same extents.
fn check_writer_matches(
    header: &Header,
    header_src: &[u8],
    lower: &[u8],
    plain: &[u8],
    keys: &KeySet,
    main: &Skek,
) {
    let key = unwrap_fek(&header.packets, keys).unwrap();
    let with = [WrappingKey::Passphrase {
        skek: main.clone(),
        salt: DEFAULT_SALT,
    }];
    assert_eq!(wrap_fek(&key, &with).unwrap(), header.packets);
    let ours = if header.in_xattr() {
        header.to_xattr_bytes().unwrap()
    } else {
        header.to_file_bytes().unwrap()
    };
    let theirs = if header.in_xattr() {
        header_src
    } else {
        &lower[..8192]
    };
    assert_eq!(ours.len(), theirs.len());
    assert_eq!(ours[..8], theirs[..8]);
    assert_eq!(ours[16..], theirs[16..]);
    let offset = header.lower_data_offset() as usize;
    for (i, chunk) in plain.chunks(EXTENT_SIZE).enumerate() {
        let mut ext = vec![0u8; EXTENT_SIZE];
        ext[..chunk.len()].copy_from_slice(chunk);
        key.encrypt_extent(i as u64, &mut ext);
        let at = offset + i * EXTENT_SIZE;
        assert!(ext == lower[at..at + EXTENT_SIZE], "extent {i} differs");
    }
    // The interleaved multi-extent path must give the same bytes.
    let mut all = plain.to_vec();
    all.resize(plain.len().div_ceil(EXTENT_SIZE) * EXTENT_SIZE, 0);
    key.encrypt_extents(0, &mut all);
    assert!(all == lower[offset..], "multi-extent encryption differs");
}

#[test]
fn aes128() {
    check_set("aes128");
}

#[test]
fn aes192() {
    check_set("aes192");
}

#[test]
fn aes256() {
    check_set("aes256");
}

#[test]
fn aes128_fnek() {
    check_set("aes128-fnek");
}

#[test]
fn aes256_fnek() {
    check_set("aes256-fnek");
}

#[test]
fn aes128_fnek_separate() {
    check_set("aes128-fnek-separate");
}

#[test]
fn aes128_xattr() {
    check_set("aes128-xattr");
}

#[test]
fn blowfish56_fnek() {
    check_cipher_set("blowfish56-fnek");
}

#[test]
fn blowfish16() {
    check_cipher_set("blowfish16");
}

#[test]
fn des3_ede24_fnek() {
    check_cipher_set("des3_ede24-fnek");
}

#[test]
fn cast5_16_fnek() {
    check_cipher_set("cast5-16-fnek");
}

#[test]
fn cast6_32_fnek() {
    check_cipher_set("cast6-32-fnek");
}

#[test]
fn cast6_16() {
    check_cipher_set("cast6-16");
}

#[test]
fn twofish32_fnek() {
    check_cipher_set("twofish32-fnek");
}

#[test]
fn twofish16_fnek_separate() {
    check_cipher_set("twofish16-fnek-separate");
}
