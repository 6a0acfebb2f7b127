//! The helper on a private system bus with the REAL polkitd, called by unprivileged users.
//!
//! In a private mount namespace (`unshare -m`), test polkit rules are bind-mounted over
//! /etc/polkit-1/rules.d, the helper's policy file is added to polkit's actions, and
//! test users are added to a bind-mounted copy of /etc/passwd. A dbus-daemon with a
//! system-bus configuration (including `data/io.github.strongroom.Helper.conf`) listens
//! on a private socket; polkitd and `strongroom-helper --fake-mounts` (the mounter is
//! the only test double; the authority is the real polkit client) connect to it. The
//! callers are this test binary run through `setpriv --reuid`.
//!
//! Needs root, dbus-daemon, polkitd (/usr/lib/polkit-1/polkitd), setpriv, unshare.
//! Skips with a message when they are missing, unless STRONGROOM_REQUIRE_REAL=1.

use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::chown;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod support;
use support::{inner_args, missing_prerequisite, sh, HelperStart, PrivateSystem};

use strongroom_dbus::{Error, Helper1Proxy, MountOptions, UnmountOptions};
use zbus::zvariant::Fd;

/// Test users: (name, uid). Rules below decide by name.
const USERS: [(&str, u32); 5] = [
    ("sr-alice", 61001),
    ("sr-bob", 61002),
    ("sr-carol", 61003),
    ("sr-dave", 61004),
    ("sr-erin", 61005),
];
const SIG: &str = "2a97418edca01eb9";

const RULES: &str = r#"
// Strongroom helper test rules (bind-mounted in a private mount namespace).
polkit.addRule(function(action, subject) {
    if (action.id.indexOf("io.github.strongroom.") !== 0) {
        return polkit.Result.NOT_HANDLED;
    }
    var others = /-others$/.test(action.id);
    if (subject.user === "sr-alice" || subject.user === "sr-erin") {
        return others ? polkit.Result.NO : polkit.Result.YES;
    }
    if (subject.user === "sr-bob") {
        return polkit.Result.NO;
    }
    if (subject.user === "sr-carol") {
        return polkit.Result.AUTH_ADMIN;
    }
    return polkit.Result.NOT_HANDLED; // sr-dave: the policy file's defaults
});
"#;

#[test]
fn real_polkitd_decides_for_unprivileged_callers() {
    support::run_in_namespace(
        "real_polkitd_decides_for_unprivileged_callers",
        "inner_real_polkitd",
        "STRONGROOM_POLKIT_INNER",
        missing_prerequisite(),
    );
}

// ------------------------------------------------------------ inside the namespace

#[test]
#[ignore = "entry point of real_polkitd_decides_for_unprivileged_callers (runs in its namespace)"]
fn inner_real_polkitd() {
    if std::env::var_os("STRONGROOM_POLKIT_INNER").is_none() {
        eprintln!(
            "inner_real_polkitd: only runs inside real_polkitd_decides_for_unprivileged_callers"
        );
        return;
    }
    // In the VM (kernel_backend_in_the_vm): the real mounter beside the real eCryptfs,
    // and the helper the installed one, started by D-Bus activation (with its defaults:
    // 60 s idle timeout, the ledger in /run, a fresh tmpfs there); on the host it is
    // started directly with the fake mounter.
    let real_mounts = std::env::var_os("STRONGROOM_HELPER_REAL_MOUNTS").is_some();
    let sys = PrivateSystem::start(
        &USERS,
        RULES,
        if real_mounts {
            HelperStart::Activated
        } else {
            HelperStart::FakeMounts
        },
    );
    if sys.helper.is_none() {
        assert!(
            !sys.bus_names().contains("io.github.strongroom.Helper"),
            "nothing started the helper yet"
        );
    }

    // Vault directories of each user.
    let vaults = sys.dir.path().join("vaults");
    std::fs::create_dir(&vaults).unwrap();
    let mkdir = |name: &str, uid: u32| {
        let p = vaults.join(name);
        std::fs::create_dir(&p).unwrap();
        chown(&p, Some(uid), Some(uid)).unwrap();
        p
    };
    let call = |user: (&str, u32), request: &str| -> String {
        let out = sys
            .as_user(user.1, std::env::current_exe().unwrap())
            .args(inner_args("polkit_client"))
            .env("STRONGROOM_POLKIT_CLIENT", request)
            .stdout(Stdio::piped())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text
            .lines()
            .find_map(|l| l.split_once("RESULT ").map(|(_, r)| r.to_owned()));
        line.unwrap_or_else(|| panic!("no result from client {request}: {text}"))
    };
    let [alice, bob, carol, dave, erin] = USERS;
    let err = |name: &str| format!("err io.github.strongroom.Helper.Error.{name}");

    // Allowed: Alice mounts her own vault, sees it, locks it.
    let (al, at) = (mkdir("alice.lower", alice.1), mkdir("alice", alice.1));
    if real_mounts {
        // The other direction: a file strongroom-core encrypted into the lower
        // directory, to be read through the kernel mount.
        use strongroom_core::cipher::{Cipher, CipherSpec};
        use strongroom_core::file::{encrypt_file, WriteContext};
        use strongroom_core::keys::WrappingKey;
        let skek = strongroom_core::kdf::derive_skek(
            &strongroom_core::kdf::Passphrase::new("test123").unwrap(),
            &strongroom_core::kdf::DEFAULT_SALT,
        );
        let ctx = WriteContext {
            spec: CipherSpec::new(Cipher::Aes, 16).unwrap(),
            keys: vec![WrappingKey::Passphrase {
                skek,
                salt: strongroom_core::kdf::DEFAULT_SALT,
            }],
            xattr: false,
            fnek: false,
        };
        let mut lower_file = std::fs::File::create(al.join("from-core.txt")).unwrap();
        encrypt_file(
            &ctx,
            &mut "written by strongroom-core\n".as_bytes(),
            &mut lower_file,
        )
        .unwrap();
        drop(lower_file);
        chown(al.join("from-core.txt"), Some(alice.1), Some(alice.1)).unwrap();
    }
    let mounted = call(
        alice,
        &format!("mount {} {} interactive", al.display(), at.display()),
    );
    assert_eq!(mounted, format!("ok {}", at.display()));
    assert_eq!(call(alice, "list"), format!("ok {}", at.display()));
    let secret = "the key is under the mat\n";
    if real_mounts {
        // Alice writes through the kernel mount; after locking, the lower file must be
        // eCryptfs that the userspace implementation (strongroom-core) decrypts.
        // A real eCryptfs mount, nosuid,nodev (CVE-2012-3409), at the checked place.
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let line = info
            .lines()
            .find(|l| {
                l.split(' ').nth(4) == Some(&at.to_string_lossy()) && l.contains(" - ecryptfs ")
            })
            .unwrap_or_else(|| panic!("no ecryptfs mount at {}:\n{info}", at.display()));
        let flags = line.split(' ').nth(5).unwrap();
        assert!(
            flags.contains("nosuid") && flags.contains("nodev"),
            "{line}"
        );
        assert!(line.contains(&format!("ecryptfs_sig={SIG}")), "{line}");
        assert_eq!(
            call(
                alice,
                &format!("read {}", at.join("from-core.txt").display())
            ),
            "ok written by strongroom-core"
        );
        let file = at.join("letter.txt");
        assert_eq!(call(alice, &format!("write {}", file.display())), "ok ");
    }
    assert_eq!(call(bob, "list"), "ok ");
    // Bob may not lock Alice's vault (vault-unmount-others: NO for him).
    assert_eq!(
        call(bob, &format!("unmount {}", at.display())),
        err("NotAuthorized")
    );
    assert_eq!(call(alice, &format!("unmount {}", at.display())), "ok ");
    if real_mounts {
        assert!(
            !at.join("letter.txt").exists(),
            "locked: the plaintext is gone"
        );
        let lower_file = al.join("letter.txt");
        let raw = std::fs::read(&lower_file).unwrap();
        assert!(
            !raw.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "lower file is plaintext"
        );
        let mut keys = strongroom_core::keys::KeySet::new();
        let skek = strongroom_core::kdf::derive_skek(
            &strongroom_core::kdf::Passphrase::new("test123").unwrap(),
            &strongroom_core::kdf::DEFAULT_SALT,
        );
        assert_eq!(keys.add_passphrase(skek).to_hex(), SIG);
        let mut out = Vec::new();
        strongroom_core::file::decrypt_file(&mut std::io::Cursor::new(raw), None, &keys, &mut out)
            .unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), secret);
        let mount = openssl_vaults_in_the_kernel(&vaults, alice, erin, &call);
        if let Some(exe) = &sys.installed {
            idle_exit(
                exe,
                &|| sys.helper_pid(),
                &|| call(alice, &mount.0),
                &|| call(alice, &format!("unmount {}", mount.1.display())),
            );
            assert_eq!(
                call(alice, "list"),
                "ok ",
                "a fresh instance, nothing mounted"
            );
        }
    }
    // Alice is refused where she does not own the directory (vault-mount-others: NO).
    let bobs = mkdir("bob", bob.1);
    assert_eq!(
        call(
            alice,
            &format!("mount {} {} interactive", al.display(), bobs.display())
        ),
        err("NotAuthorized")
    );
    // A system path is refused before polkit would even be asked.
    assert_eq!(
        call(alice, &format!("mount {} /etc interactive", al.display())),
        err("InvalidArgument")
    );
    // Denied: Bob on his own directories.
    let bl = mkdir("bob.lower", bob.1);
    assert_eq!(
        call(
            bob,
            &format!("mount {} {} interactive", bl.display(), bobs.display())
        ),
        err("NotAuthorized")
    );
    // Challenged: Carol needs an administrator. With interaction allowed but no
    // authentication agent, polkitd still answers "challenge" (observed with polkitd
    // 122): the caller learns that authentication could obtain it, nothing is mounted.
    let (cl, ct) = (mkdir("carol.lower", carol.1), mkdir("carol", carol.1));
    let interactive = call(
        carol,
        &format!("mount {} {} interactive", cl.display(), ct.display()),
    );
    assert_eq!(interactive, err("NotAuthorizedCanObtain"));
    assert_eq!(
        call(
            carol,
            &format!("mount {} {} quiet", cl.display(), ct.display())
        ),
        err("NotAuthorizedCanObtain")
    );
    // Dave: no rule, so the policy file's defaults apply (no logind session here:
    // allow_any = auth_admin_keep for vault-mount, yes for vault-unmount).
    let (dl, dt) = (mkdir("dave.lower", dave.1), mkdir("dave", dave.1));
    assert_eq!(
        call(
            dave,
            &format!("mount {} {} quiet", dl.display(), dt.display())
        ),
        err("NotAuthorizedCanObtain")
    );
    assert_eq!(call(dave, "wipe"), "ok 0");
    // Nothing was mounted by all this.
    assert!(
        std::fs::read_to_string(sys.ledger.join("mounts.json"))
            .unwrap()
            .trim()
            == "[]"
    );
    // The bus policy lets callers reach only the helper's interfaces, and never own its name.
    assert!(call(alice, "props").starts_with("err org.freedesktop.DBus.Error.AccessDenied"));
    assert!(call(alice, "own").starts_with("err org.freedesktop.DBus.Error.AccessDenied"));

    // polkitd gone: the helper fails closed.
    sys.stop_polkitd();
    let failed = call(
        alice,
        &format!("mount {} {} interactive", al.display(), at.display()),
    );
    assert_eq!(failed, err("AuthorityUnavailable"));
}

/// Issue 6: OpenSSL-keyed (tag 1) vaults through the kernel, the helper answering
/// /dev/ecryptfs. Keys are made by the openssl command line in ecryptfs-utils' format
/// (traditional PEM, AES-256-CBC); callers send them decrypted (MountWithKeys).
fn openssl_vaults_in_the_kernel(
    vaults: &Path,
    alice: (&str, u32),
    erin: (&str, u32),
    call: &dyn Fn((&str, u32), &str) -> String,
) -> (String, PathBuf) {
    use std::sync::Arc;
    use strongroom_core::cipher::{Cipher, CipherSpec};
    use strongroom_core::file::{decrypt_file, encrypt_file, read_header, WriteContext};
    use strongroom_core::kdf::Passphrase;
    use strongroom_core::keys::WrappingKey;
    use strongroom_core::packet::KeyPacket;
    use strongroom_core::pubkey::{RsaKeyPair, RsaPublicKey};

    let own = |p: &Path, uid: u32| chown(p, Some(uid), Some(uid)).unwrap();
    // A file strongroom-core encrypts to `key` (a tag 1 packet).
    let core_file = |path: &Path, text: &str, key: &RsaPublicKey, uid: u32| {
        let ctx = WriteContext {
            spec: CipherSpec::new(Cipher::Aes, 32).unwrap(),
            keys: vec![WrappingKey::PublicKey(Arc::new(
                RsaPublicKey::from_pem(&key.to_pem().unwrap()).unwrap(),
            ))],
            xattr: false,
            fnek: false,
        };
        let mut f = std::fs::File::create(path).unwrap();
        encrypt_file(&ctx, &mut text.as_bytes(), &mut f).unwrap();
        drop(f);
        own(path, uid);
    };
    // A user's key pair and vault (with a tree strongroom-core made).
    let big = "0123456789".repeat(1000);
    let vault = |user: (&str, u32)| {
        let name = user.0;
        let pem = vaults.join(format!("{name}.pem"));
        sh(Command::new("openssl")
            .args([
                "genrsa",
                "-traditional",
                "-aes256",
                "-passout",
                "pass:pw",
                "-out",
            ])
            .arg(&pem)
            .arg("2048")
            .stderr(Stdio::null()));
        own(&pem, user.1);
        let pair = RsaKeyPair::load(&pem, &Passphrase::new("pw").unwrap()).unwrap();
        let (lower, target) = (
            vaults.join(format!("{name}.pk.lower")),
            vaults.join(format!("{name}.pk")),
        );
        for d in [
            &lower,
            &target,
            &lower.join("tree"),
            &lower.join("tree/sub"),
        ] {
            std::fs::create_dir(d).unwrap();
            own(d, user.1);
        }
        let text = format!("tag 1 from strongroom-core for {name}\n");
        core_file(&lower.join("tree/a.txt"), &text, pair.public(), user.1);
        core_file(&lower.join("tree/sub/big.txt"), &big, pair.public(), user.1);
        let mount = format!(
            "mountkey {} {} {} {}",
            lower.display(),
            target.display(),
            pem.display(),
            pair.sig().to_hex()
        );
        (pair, lower, target, mount)
    };
    let (pair, lower, target, mount) = vault(alice);
    core_file(
        &lower.join("unread.txt"),
        "opened first by another user\n",
        pair.public(),
        alice.1,
    );
    let stranger = RsaKeyPair::generate(1024).unwrap();
    core_file(
        &lower.join("stranger.txt"),
        "not for this daemon\n",
        stranger.public(),
        alice.1,
    );

    assert_eq!(call(alice, &mount), format!("ok {}", target.display()));
    let read = |user, path: &Path| call(user, &format!("read {}", path.display()));
    assert_eq!(
        read(alice, &target.join("tree/a.txt")),
        "ok tag 1 from strongroom-core for sr-alice"
    );
    assert_eq!(
        read(alice, &target.join("tree/sub/big.txt")),
        format!("ok {big}")
    );
    assert_eq!(
        call(
            alice,
            &format!("write {}", target.join("new.txt").display())
        ),
        "ok "
    );
    // A private-key token the daemon has no key for (Alice put it in her own keyring,
    // so the kernel asks her daemon): an error at once, not the kernel's 3 s timeout.
    let unknown = call(
        alice,
        &format!(
            "readwithtoken {} {}",
            target.join("stranger.txt").display(),
            stranger.sig().to_hex()
        ),
    );
    let ms: u64 = unknown
        .rsplit_once(" ms=")
        .and_then(|(_, n)| n.parse().ok())
        .unwrap_or_else(|| panic!("{unknown}"));
    assert!(unknown.starts_with("err "), "{unknown}");
    assert!(ms < 2500, "the kernel waited for the daemon: {unknown}");

    // A second user at the same time, with her own key and daemon. Her processes get
    // nothing from Alice's key: the kernel asks the daemon of the reader's euid. (Once
    // a file is open, the kernel keeps its FEK with the inode for every reader, as for
    // any eCryptfs mount: hence a file Alice has not opened.)
    let (erin_pair, _, erin_target, erin_mount) = vault(erin);
    assert_eq!(
        call(erin, &erin_mount),
        format!("ok {}", erin_target.display())
    );
    assert_eq!(
        read(erin, &erin_target.join("tree/a.txt")),
        "ok tag 1 from strongroom-core for sr-erin"
    );
    let across = read(erin, &target.join("unread.txt"));
    assert!(across.starts_with("err "), "{across}");
    assert_eq!(
        read(alice, &target.join("unread.txt")),
        "ok opened first by another user",
        "Alice's daemon is unaffected"
    );
    assert_eq!(
        call(erin, &format!("unmount {}", erin_target.display())),
        "ok "
    );
    drop(erin_pair);
    assert_eq!(call(alice, &format!("unmount {}", target.display())), "ok ");

    // What the kernel wrote: a tag 1 packet for the key, that strongroom-core opens.
    let raw = std::fs::read(lower.join("new.txt")).unwrap();
    let header = read_header(&raw[..4096], None).unwrap();
    assert!(
        header
            .packets
            .iter()
            .any(|p| matches!(p, KeyPacket::PublicKey { sig: s, .. } if *s == pair.sig())),
        "no tag 1 packet for {}: {:?}",
        pair.sig(),
        header.packets
    );
    let mut out = Vec::new();
    decrypt_file(&mut std::io::Cursor::new(raw), None, &pair, &mut out).unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "the key is under the mat\n"
    );

    // The daemon stopped with the last key; a new mount registers a new one.
    assert_eq!(call(alice, &mount), format!("ok {}", target.display()));
    assert_eq!(
        read(alice, &target.join("new.txt")),
        "ok the key is under the mat"
    );
    assert_eq!(call(alice, &format!("unmount {}", target.display())), "ok ");
    (mount, target)
}

/// The activated helper is the installed binary; it stays past its idle timeout (60 s)
/// while it holds a mount and its private key, and exits once idle without them.
fn idle_exit(
    installed: &Path,
    helper_pid: &dyn Fn() -> Option<u32>,
    mount: &dyn Fn() -> String,
    unmount: &dyn Fn() -> String,
) {
    const IDLE: Duration = Duration::from_secs(60);
    let pid = helper_pid().expect("the calls activated the helper");
    assert_eq!(
        std::fs::read_link(format!("/proc/{pid}/exe")).unwrap(),
        installed.canonicalize().unwrap(),
        "the bus started the installed helper"
    );
    assert!(mount().starts_with("ok "));
    std::thread::sleep(IDLE + Duration::from_secs(10));
    assert_eq!(
        helper_pid(),
        Some(pid),
        "exited while holding a mount and a key"
    );
    assert_eq!(unmount(), "ok ");
    let t = Instant::now();
    while helper_pid().is_some() || Path::new(&format!("/proc/{pid}")).exists() {
        assert!(
            t.elapsed() < IDLE + Duration::from_secs(30),
            "still running {:?} after the last call",
            t.elapsed()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(
        t.elapsed() >= IDLE - Duration::from_secs(5),
        "exited {:?} after the last call, before the idle timeout",
        t.elapsed()
    );
}

// ------------------------------------------------------------ the unprivileged caller

fn open_dir(p: &str) -> OwnedFd {
    use rustix::fs::{open, Mode, OFlags};
    open(
        p,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .unwrap()
}

fn token() -> Vec<u8> {
    let skek = hex::decode("648eecb6ebfeab9555c92628b892a2b215b85b619bc7cd53dd4b9415c0a7f86181087fa8258d9d9adaa78ae648429fe379db612ccd610bf9834bf644ae60d3f6").unwrap();
    let mut t = vec![0u8; 740];
    t[0] = 4;
    t[632..636].copy_from_slice(&10u32.to_le_bytes());
    t[640..644].copy_from_slice(&64u32.to_le_bytes());
    t[644..648].copy_from_slice(&2u32.to_le_bytes());
    t[648..712].copy_from_slice(&skek);
    t[712..728].copy_from_slice(SIG.as_bytes());
    t[729..737].copy_from_slice(&[0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77]);
    t
}

fn show(r: Result<String, Error>) -> String {
    use zbus::DBusError;
    match r {
        Ok(s) => format!("ok {s}"),
        Err(Error::ZBus(zbus::Error::MethodError(name, msg, _))) => {
            format!("err {name} {}", msg.unwrap_or_default())
        }
        Err(e) => format!("err {}", e.name()),
    }
}

#[test]
#[ignore = "entry point of the callers of real_polkitd_decides_for_unprivileged_callers"]
fn polkit_client() {
    let Ok(request) = std::env::var("STRONGROOM_POLKIT_CLIENT") else {
        eprintln!(
            "polkit_client: only runs as a caller in real_polkitd_decides_for_unprivileged_callers"
        );
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let result = rt.block_on(async {
        let conn = zbus::Connection::system().await.unwrap();
        let proxy = Helper1Proxy::new(&conn).await.unwrap();
        let words: Vec<&str> = request.split(' ').collect();
        let none = HashMap::new();
        match words[..] {
            ["mount", lower, target, mode] => {
                let mut o = MountOptions::new(vec![SIG.into()]);
                o.no_user_interaction = mode == "quiet";
                let (l, t) = (open_dir(lower), open_dir(target));
                let tok = token();
                show(
                    proxy
                        .mount(
                            Fd::from(l.as_fd()),
                            Fd::from(t.as_fd()),
                            &[&tok],
                            &o.to_dict(),
                        )
                        .await
                        .map(|i| i.mount_point),
                )
            }
            ["mountkey", lower, target, pem, sig] => {
                let pem = std::fs::read(pem).unwrap();
                let der = openssl::rsa::Rsa::private_key_from_pem_passphrase(&pem, b"pw")
                    .unwrap()
                    .private_key_to_der()
                    .unwrap();
                let (l, t) = (open_dir(lower), open_dir(target));
                let o = MountOptions::new(vec![sig.into()]);
                show(
                    proxy
                        .mount_with_keys(
                            Fd::from(l.as_fd()),
                            Fd::from(t.as_fd()),
                            &[],
                            &[&der],
                            &o.to_dict(),
                        )
                        .await
                        .map(|i| i.mount_point),
                )
            }
            ["readwithtoken", path, sig] => {
                // In a session keyring of this process only.
                strongroom_helper::keystore::join_private_session().unwrap();
                let token = strongroom_core::token::AuthToken::private_key(
                    sig.parse().unwrap(),
                    "openssl",
                    zeroize::Zeroizing::new(Vec::new()),
                )
                .unwrap();
                linux_keyutils::KeyRing::from_special_id(
                    linux_keyutils::KeyRingIdentifier::Session,
                    true,
                )
                .unwrap()
                .add_key(sig, token.to_bytes().as_slice())
                .unwrap();
                let t = Instant::now();
                let r = std::fs::read_to_string(path);
                let ms = t.elapsed().as_millis();
                match r {
                    Ok(text) => format!("ok {} ms={ms}", text.trim_end()),
                    Err(e) => format!("err {e} ms={ms}"),
                }
            }
            ["unmount", path] => show(
                proxy
                    .unmount(path, &UnmountOptions::default().to_dict())
                    .await
                    .map(|()| String::new()),
            ),
            ["list"] => show(proxy.list_mounts(&none).await.map(|v| {
                v.into_iter()
                    .map(|i| i.mount_point)
                    .collect::<Vec<_>>()
                    .join(",")
            })),
            ["wipe"] => show(proxy.wipe_tokens(&[], &none).await.map(|n| n.to_string())),
            ["read", path] => show(
                std::fs::read_to_string(path)
                    .map(|t| t.trim_end().to_owned())
                    .map_err(|e| Error::Failed(e.to_string())),
            ),
            ["write", path] => show(
                std::fs::write(path, "the key is under the mat\n")
                    .map(|()| String::new())
                    .map_err(|e| Error::Failed(e.to_string())),
            ),
            ["props"] => {
                let r = conn
                    .call_method(
                        Some("io.github.strongroom.Helper"),
                        "/io/github/strongroom/Helper",
                        Some("org.freedesktop.DBus.Properties"),
                        "GetAll",
                        &("io.github.strongroom.Helper1",),
                    )
                    .await;
                show(r.map(|_| String::new()).map_err(Error::ZBus))
            }
            ["own"] => show(
                conn.request_name("io.github.strongroom.Helper")
                    .await
                    .map(|_| String::new())
                    .map_err(Error::ZBus),
            ),
            _ => panic!("bad request {request}"),
        }
    });
    println!("RESULT {result}");
}

/// The kernel backend for real: the same scenario inside the test VM (Debian's 6.1
/// kernel with eCryptfs), with the real mounter. Needs `cargo xtask vm-setup`; prints
/// SKIPPED without it, fails when STRONGROOM_REQUIRE_VM=1.
#[test]
fn kernel_backend_in_the_vm() {
    support::run_in_vm(
        "kernel_backend_in_the_vm",
        "inner_real_polkitd",
        &[
            ("STRONGROOM_POLKIT_INNER", "1"),
            ("STRONGROOM_HELPER_REAL_MOUNTS", "1"),
        ],
        Duration::from_secs(600),
    );
}
