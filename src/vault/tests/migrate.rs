//! The manager's migrate API: progress on the event stream (what the GUI's progress bar
//! shows), the summary, and the round trip folder → vault → folder. The totals are
//! checked against the tree this test writes, the ciphertext with strongroom-core's
//! decryptor. Kill/resume runs are in `src/cli/tests/migrate.rs` (real binary).

use std::collections::BTreeMap;
use std::path::Path;

use strongroom_core::file::decrypt_file;
use strongroom_core::kdf::{derive_skek, Passphrase, DEFAULT_SALT};
use strongroom_core::keyring::Ring;
use strongroom_core::keys::KeySet;
use strongroom_vault::backend::Backends;
use strongroom_vault::context::{BackendKind, FilenameEncryption};
use strongroom_vault::keysource::{KeyMaterial, SigGuard};
use strongroom_vault::manager::{ManagerConfig, VaultManager, VaultState};
use strongroom_vault::migrate::{
    Direction, EncryptRequest, MigratePhase, MigrateProgress, VaultPlan,
};
use strongroom_vault::registry::Registry;
use strongroom_vault::secret_store::SecretStore;

const PASS: &str = "progress bar passphrase";

fn manager(dir: &Path) -> VaultManager {
    VaultManager::new(ManagerConfig {
        registry: Registry::at(dir.join("config/vaults.toml")),
        ring: Ring::Session,
        sig_guard: SigGuard::at(dir.join("sig-cache.txt")),
        secrets: SecretStore::default(),
        backends: Backends {
            ctl: "/nonexistent/strongroomctl".into(),
            log: dir.join("fuse.log"),
        },
        state_dir: dir.join("state"),
    })
}

fn material() -> KeyMaterial {
    KeyMaterial::Passphrase(Passphrase::new(PASS).unwrap())
}

/// Everything Migrating on the stream, in order, and the last state.
fn drain(
    rx: &mut tokio::sync::broadcast::Receiver<strongroom_vault::manager::VaultEvent>,
) -> (Vec<MigrateProgress>, Option<VaultState>) {
    let (mut seen, mut last) = (vec![], None);
    loop {
        match rx.try_recv() {
            Ok(ev) => {
                if let VaultState::Migrating(p) = &ev.state {
                    seen.push(p.clone());
                }
                last = Some(ev.state);
            }
            Err(tokio::sync::broadcast::error::TryRecvError::Lagged(_)) => {}
            Err(_) => return (seen, last),
        }
    }
}

fn monotone_and_complete(ps: &[MigrateProgress], files: u64, bytes: u64, dir: Direction) {
    let files_phase: Vec<_> = ps
        .iter()
        .filter(|p| p.phase == MigratePhase::Files)
        .collect();
    assert!(files_phase.len() >= 2, "{ps:?}");
    assert_eq!(
        (files_phase[0].files_done, files_phase[0].bytes_done),
        (0, 0)
    );
    for w in files_phase.windows(2) {
        assert!(w[0].files_done <= w[1].files_done && w[0].bytes_done <= w[1].bytes_done);
    }
    let end = files_phase.last().unwrap();
    assert_eq!(
        (
            end.files_done,
            end.files_total,
            end.bytes_done,
            end.bytes_total
        ),
        (files, files, bytes, bytes)
    );
    assert!(ps.iter().all(|p| p.direction == dir));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_on_the_event_stream_and_round_trip() {
    let t = tempfile::tempdir().unwrap();
    let folder = t.path().join("Pictures");
    std::fs::create_dir_all(folder.join("2024/summer")).unwrap();
    let mut want = BTreeMap::new();
    for i in 0..30u32 {
        let rel = format!(
            "{}img-{i}.raw",
            ["", "2024/", "2024/summer/"][i as usize % 3]
        );
        let data: Vec<u8> = (0..i * 3001).map(|b| (b % 251) as u8 ^ i as u8).collect();
        std::fs::write(folder.join(&rel), &data).unwrap();
        want.insert(rel, data);
    }
    // A second name of one file: kept as a hard link of its ciphertext.
    std::fs::hard_link(folder.join("2024/img-1.raw"), folder.join("same as 1.raw")).unwrap();
    want.insert("same as 1.raw".into(), want["2024/img-1.raw"].clone());
    let bytes: u64 = want.values().map(|d| d.len() as u64).sum();
    let m = manager(t.path());
    let mut rx = m.subscribe();
    let s = m
        .migrate_encrypt(EncryptRequest {
            name: "pics".into(),
            folder: folder.clone(),
            lower: None,
            material: material(),
            plan: VaultPlan {
                cipher: "aes".into(),
                key_bytes: Some(32),
                filename_encryption: FilenameEncryption::None,
                xattr: false,
                backend: BackendKind::Userspace,
            },
        })
        .await
        .unwrap();
    assert_eq!(
        (s.files, s.bytes, s.dirs, s.hard_links_kept),
        (31, bytes, 2, 1)
    );
    let (ps, last) = drain(&mut rx);
    monotone_and_complete(&ps, 31, bytes, Direction::Encrypt);
    assert_eq!(last, Some(VaultState::Locked));
    assert_eq!(std::fs::read_dir(&folder).unwrap().count(), 0);

    // The default lower directory, readable by the core's decryptor with the key.
    let lower = t.path().join(".Pictures.strongroom");
    let mut keys = KeySet::new();
    keys.add_passphrase(derive_skek(&Passphrase::new(PASS).unwrap(), &DEFAULT_SALT));
    for (rel, data) in &want {
        let mut out = Vec::new();
        let mut f = std::fs::File::open(lower.join(rel)).unwrap();
        decrypt_file(&mut f, None, &keys, &mut out).unwrap();
        assert_eq!(&out, data, "{rel}");
    }
    use std::os::unix::fs::MetadataExt;
    let ino = |rel: &str| std::fs::metadata(lower.join(rel)).unwrap().ino();
    assert_eq!(ino("2024/img-1.raw"), ino("same as 1.raw"));
    // A wrong passphrase is refused before anything is written.
    let out = t.path().join("back");
    let e = m
        .migrate_decrypt(
            "pics",
            KeyMaterial::Passphrase(Passphrase::new("not it").unwrap()),
            &out,
            true,
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("wrong passphrase"), "{e}");
    assert!(lower.exists());
    assert!(m.pending_migration("pics").unwrap().is_none());
    assert!(!out.exists());
    let s = m
        .migrate_decrypt("pics", material(), &out, true)
        .await
        .unwrap();
    assert!(s.vault_removed);
    let (ps, _) = drain(&mut rx);
    monotone_and_complete(&ps, 31, bytes, Direction::Decrypt);
    assert_eq!(ps.last().unwrap().phase, MigratePhase::RemovingVault);
    for (rel, data) in &want {
        assert_eq!(&std::fs::read(out.join(rel)).unwrap(), data, "{rel}");
    }
    assert_eq!(s.hard_links_kept, 1);
    let ino = |rel: &str| std::fs::metadata(out.join(rel)).unwrap().ino();
    assert_eq!(ino("2024/img-1.raw"), ino("same as 1.raw"));
    assert!(!lower.exists());
    assert!(m.list().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssl_key_vault_round_trip() {
    use strongroom_core::pubkey::RsaKeyPair;
    let t = tempfile::tempdir().unwrap();
    let pem = t.path().join("usb/key.pem");
    std::fs::create_dir_all(pem.parent().unwrap()).unwrap();
    let kp = Passphrase::new("pem passphrase").unwrap();
    let pair = RsaKeyPair::generate(2048).unwrap();
    pair.save(&pem, &t.path().join("usb/key.pub.pem"), &kp)
        .unwrap();
    let folder = t.path().join("Work");
    std::fs::create_dir_all(folder.join("sub")).unwrap();
    std::fs::write(folder.join("sub/report.txt"), b"quarterly numbers\n").unwrap();
    std::fs::write(folder.join("empty"), b"").unwrap();
    let key = || KeyMaterial::PemKey {
        keyfile: pem.clone(),
        passphrase: kp.clone(),
    };
    let lower = t.path().join("work.lower");
    let m = manager(t.path());
    let s = m
        .migrate_encrypt(EncryptRequest {
            name: "work".into(),
            folder: folder.clone(),
            lower: Some(lower.clone()),
            material: key(),
            plan: VaultPlan {
                cipher: "aes".into(),
                key_bytes: None,
                filename_encryption: FilenameEncryption::None,
                xattr: false,
                backend: BackendKind::Userspace,
            },
        })
        .await
        .unwrap();
    assert_eq!((s.files, s.bytes), (2, 18));
    // The ciphertext opens with the private key alone (core decryptor, tag 1 packet).
    let mut out = Vec::new();
    let mut f = std::fs::File::open(lower.join("sub/report.txt")).unwrap();
    decrypt_file(&mut f, None, &pair, &mut out).unwrap();
    assert_eq!(out, b"quarterly numbers\n");
    let back = t.path().join("back");
    m.migrate_decrypt("work", key(), &back, false)
        .await
        .unwrap();
    assert_eq!(
        std::fs::read(back.join("sub/report.txt")).unwrap(),
        b"quarterly numbers\n"
    );
    assert_eq!(std::fs::read(back.join("empty")).unwrap(), b"");
    // Without --remove-vault the vault stays.
    assert!(lower.join("sub/report.txt").exists());
    assert_eq!(m.list().await.unwrap().len(), 1);
}
