//! Our writer checked by the real kernel: we encrypt the fixture plaintext tree
//! (contents with `file::encrypt_file`, names with `FilenameKey`) for every cipher
//! and key size, and the kernel-oracle VM (kernel 6.1 eCryptfs) must decrypt it
//! back. Needs `KERNEL_ORACLE=/path/to/kernel-oracle` after its `setup`; skipped
//! otherwise (set `KERNEL_ORACLE_REQUIRED=1` to make a skip a failure).

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use strongroom_core::cipher::{Cipher, CipherSpec};
use strongroom_core::file::{encrypt_file, WriteContext};
use strongroom_core::filename::FilenameKey;
use strongroom_core::kdf::{derive_skek, Passphrase, Skek, DEFAULT_SALT};
use strongroom_core::keys::WrappingKey;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/kernel")
}

/// `kernel-oracle/run`, or None (skip).
fn kernel_oracle() -> Option<PathBuf> {
    let required = std::env::var_os("KERNEL_ORACLE_REQUIRED").is_some();
    let Some(dir) = std::env::var_os("KERNEL_ORACLE") else {
        assert!(
            !required,
            "KERNEL_ORACLE_REQUIRED is set but KERNEL_ORACLE is not"
        );
        eprintln!("SKIP: KERNEL_ORACLE is not set (path to the kernel-oracle folder)");
        return None;
    };
    let run = PathBuf::from(dir).join("run");
    let out = Command::new(&run).arg("check").output().unwrap();
    if !out.status.success() {
        let why = String::from_utf8_lossy(&out.stderr);
        assert!(!required, "kernel oracle not usable: {why}");
        eprintln!("SKIP: kernel oracle not set up: {why}");
        return None;
    }
    Some(run)
}

/// Mirrors `plain` into `lower` the way a mount would store it.
fn write_tree(
    plain: &Path,
    lower: &Path,
    rel: &str,
    ctx: &WriteContext,
    fnek: Option<&FilenameKey>,
    dump: &mut String,
) {
    fs::create_dir_all(lower).unwrap();
    for entry in fs::read_dir(plain).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().into_string().unwrap();
        let lower_name = match fnek {
            Some(k) => String::from_utf8(k.encrypt(name.as_bytes()).unwrap()).unwrap(),
            None => name.clone(),
        };
        let lower_path = lower.join(&lower_name);
        let lower_rel = if rel.is_empty() {
            lower_name
        } else {
            format!("{rel}/{lower_name}")
        };
        if entry.file_type().unwrap().is_dir() {
            write_tree(&entry.path(), &lower_path, &lower_rel, ctx, fnek, dump);
            continue;
        }
        let mut src = fs::File::open(entry.path()).unwrap();
        let mut dst = fs::File::create(&lower_path).unwrap();
        if let Some(x) = encrypt_file(ctx, &mut src, &mut dst).unwrap() {
            writeln!(
                dump,
                "# file: {lower_rel}\nuser.ecryptfs=0x{}\n",
                hex::encode(x)
            )
            .unwrap();
        }
    }
}

fn same_tree(a: &Path, b: &Path) {
    let mut names_a: Vec<_> = fs::read_dir(a)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    let mut names_b: Vec<_> = fs::read_dir(b)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names_a.sort();
    names_b.sort();
    assert_eq!(names_a, names_b, "{}", b.display());
    for n in names_a {
        let (pa, pb) = (a.join(&n), b.join(&n));
        if pa.is_dir() {
            same_tree(&pa, &pb);
        } else {
            assert!(
                fs::read(&pa).unwrap() == fs::read(&pb).unwrap(),
                "{}",
                pb.display()
            );
        }
    }
}

/// One oracle round: we encrypt, the kernel decrypts, the result must equal the input.
fn kernel_reads_ours(run: &Path, skek: &Skek, spec: CipherSpec, fnek: bool, xattr: bool) {
    let tmp = tempfile::tempdir().unwrap();
    let (lower, back) = (tmp.path().join("lower"), tmp.path().join("back"));
    let ctx = WriteContext {
        spec,
        keys: vec![WrappingKey::Passphrase {
            skek: skek.clone(),
            salt: DEFAULT_SALT,
        }],
        xattr,
        fnek,
    };
    let fnek_key = fnek.then(|| FilenameKey::new(skek.clone(), spec).unwrap());
    let mut dump = String::new();
    let plain = fixtures().join("plain");
    write_tree(&plain, &lower, "", &ctx, fnek_key.as_ref(), &mut dump);
    let dump_path = tmp.path().join("xattrs.dump");
    fs::write(&dump_path, &dump).unwrap();
    let pass = fixtures().join("passphrase.txt");
    let key_bytes = spec.key_bytes.to_string();
    let mut args = vec![
        "decrypt",
        "--passphrase-file",
        pass.to_str().unwrap(),
        "--cipher",
        spec.cipher.name(),
        "--key-bytes",
        &key_bytes,
    ];
    if fnek {
        args.push("--fnek");
    }
    if xattr {
        args.extend(["--xattr", "--xattr-dump", dump_path.to_str().unwrap()]);
    }
    args.extend([lower.to_str().unwrap(), back.to_str().unwrap()]);
    // TCG boots occasionally die early under load (timer check panic): retry once.
    let mut last = String::new();
    for _ in 0..2 {
        let _ = fs::remove_dir_all(&back);
        let out = Command::new(run).args(&args).output().unwrap();
        if out.status.success() {
            same_tree(&plain, &back);
            return;
        }
        last = String::from_utf8_lossy(&out.stderr).into_owned();
        if out.status.code() != Some(3) {
            break;
        }
    }
    panic!("kernel could not read our {spec:?} fnek={fnek} xattr={xattr} tree:\n{last}");
}

#[test]
fn kernel_decrypts_what_we_encrypt() {
    let Some(run) = kernel_oracle() else { return };
    let text = fs::read(fixtures().join("passphrase.txt")).unwrap();
    let skek = derive_skek(&Passphrase::from_first_line(&text).unwrap(), &DEFAULT_SALT);
    let mut configs = vec![(CipherSpec::new(Cipher::Aes, 16).unwrap(), false, true)];
    for c in Cipher::ALL {
        for &n in c.key_sizes() {
            configs.push((CipherSpec::new(c, n).unwrap(), true, false));
        }
    }
    // Two VMs at a time (the build machines have 2 cores).
    let (a, b) = configs.split_at(configs.len() / 2);
    std::thread::scope(|s| {
        for half in [a, b] {
            let (run, skek) = (&run, &skek);
            s.spawn(move || {
                for &(spec, fnek, xattr) in half {
                    kernel_reads_ours(run, skek, spec, fnek, xattr);
                }
            });
        }
    });
}
