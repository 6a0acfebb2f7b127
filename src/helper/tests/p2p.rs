//! The helper's interface over a peer-to-peer connection (a socket pair), with an
//! injected authority and mounter, the real keyring (a private session keyring per
//! test) and the real ledger code. Every error path and the hostile-caller cases,
//! including the ecryptfs-utils setuid-helper CVEs they correspond to.
//!
//! Runs as root (directories are chowned to test uids): `cargo test -p strongroom-helper`.

use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::chown;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use linux_keyutils::{KeyRing, KeyRingIdentifier};
use tempfile::TempDir;
use zbus::names::UniqueName;
use zbus::zvariant::{Fd, Value};
use zbus::{connection, Connection};

use strongroom_dbus::options::keys;
use strongroom_dbus::{
    actions, Error, Helper1Proxy, KernelSupport, MountInfo, MountOptions, UnmountOptions,
    OBJECT_PATH,
};
use strongroom_helper::authority::{Authority, BoxFuture, Caller, Unavailable, Verdict};
use strongroom_helper::keystore::{join_private_session, TokenStore};
use strongroom_helper::ledger::Ledger;
use strongroom_helper::mounter::{FakeMount, FakeMounter, MountError, Mounter};
use strongroom_helper::{Config, Helper};

const SIG: &str = "2a97418edca01eb9";
const FNEK_SIG: &str = "33a5d5e39463d53f";
const ALICE: u32 = 1000;
const BOB: u32 = 2000;

// ---------------------------------------------------------------- fixtures

type Hook = Box<dyn FnOnce() + Send>;

/// An authority whose caller uid and verdicts the test sets; records every question.
#[derive(Default)]
struct FakeAuthority {
    uid: Mutex<u32>,
    verdicts: Mutex<HashMap<&'static str, Result<Verdict, Unavailable>>>,
    asked: Mutex<Vec<(&'static str, bool)>>,
    during_check: Mutex<Option<Hook>>,
    gate: Mutex<Option<Arc<tokio::sync::Notify>>>,
}

impl FakeAuthority {
    fn allow(&self, action: &'static str, v: Result<Verdict, Unavailable>) {
        self.verdicts.lock().unwrap().insert(action, v);
    }
    fn asked(&self) -> Vec<(&'static str, bool)> {
        self.asked.lock().unwrap().clone()
    }
    fn be(&self, uid: u32) {
        *self.uid.lock().unwrap() = uid;
    }
}

impl Authority for FakeAuthority {
    fn identify<'a>(
        &'a self,
        _sender: Option<UniqueName<'static>>,
    ) -> BoxFuture<'a, Result<Caller, Unavailable>> {
        let uid = *self.uid.lock().unwrap();
        Box::pin(async move {
            Ok(Caller {
                uid,
                bus_name: None,
            })
        })
    }

    fn check<'a>(
        &'a self,
        _c: &'a Caller,
        action: &'static str,
        interactive: bool,
    ) -> BoxFuture<'a, Result<Verdict, Unavailable>> {
        self.asked.lock().unwrap().push((action, interactive));
        if let Some(hook) = self.during_check.lock().unwrap().take() {
            hook();
        }
        let gate = self.gate.lock().unwrap().take();
        // Unknown actions are refused: the fake fails closed like the real one.
        let v = self
            .verdicts
            .lock()
            .unwrap()
            .get(action)
            .cloned()
            .unwrap_or(Ok(Verdict::NotAuthorized));
        Box::pin(async move {
            if let Some(g) = gate {
                g.notified().await;
            }
            v
        })
    }
}

struct Env {
    proxy: Helper1Proxy<'static>,
    client: Connection,
    _server: Connection,
    auth: Arc<FakeAuthority>,
    mounter: Arc<FakeMounter>,
    ledger_dir: PathBuf,
    dirs: TempDir,
    helper: Helper,
}

/// Run a test body on a current-thread runtime in a private session keyring. The
/// tests chown directories to test uids, so they need root (CI runs as root); without
/// it they print SKIPPED, or fail when STRONGROOM_REQUIRE_REAL=1.
fn run<F: std::future::Future<Output = ()>>(body: impl FnOnce() -> F) {
    if !rustix::process::geteuid().is_root() {
        assert!(
            std::env::var_os("STRONGROOM_REQUIRE_REAL").is_none(),
            "required but not root"
        );
        eprintln!("SKIPPED: the helper's p2p tests need root (directories owned by test uids)");
        return;
    }
    join_private_session().expect("private session keyring");
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(body());
}

async fn env_with(burst: u32, with_ecryptfs: bool) -> Env {
    env_full(burst, with_ecryptfs, Config::default().dev_ecryptfs).await
}

async fn env_full(burst: u32, with_ecryptfs: bool, dev_ecryptfs: PathBuf) -> Env {
    let auth = Arc::new(FakeAuthority::default());
    auth.be(ALICE);
    let mounter = Arc::new(FakeMounter::default());
    let state = tempfile::tempdir().unwrap();
    let ledger_dir = state.keep().join("ledger");
    if !with_ecryptfs {
        // This machine's kernel: no eCryptfs, none installed.
        let none = KernelSupport {
            available: false,
            loadable: false,
            version_bits: 0,
            features: vec![],
            messaging: false,
        };
        mounter.with(|s| s.support = Some(none));
    }
    let config = Config {
        burst,
        per_second: 0.5,
        dev_ecryptfs,
    };
    let helper = Helper::new(
        auth.clone(),
        mounter.clone(),
        Ledger::open(&ledger_dir).unwrap(),
        TokenStore::session().unwrap(),
        config,
    );
    let (a, b) = tokio::net::UnixStream::pair().unwrap();
    let guid = zbus::Guid::generate();
    let server = connection::Builder::unix_stream(a)
        .server(guid)
        .unwrap()
        .p2p()
        .serve_at(OBJECT_PATH, helper.clone())
        .unwrap()
        .build();
    let client = connection::Builder::unix_stream(b).p2p().build();
    let (server, client) = tokio::try_join!(server, client).unwrap();
    let proxy = Helper1Proxy::builder(&client)
        .destination("io.github.strongroom.Helper")
        .unwrap()
        .build()
        .await
        .unwrap();
    Env {
        proxy,
        client,
        _server: server,
        auth,
        mounter,
        ledger_dir,
        dirs: tempfile::tempdir().unwrap(),
        helper,
    }
}

async fn env() -> Env {
    env_with(1000, true).await
}

/// `env()` where polkit says yes to `actions`.
async fn env_authorizing(actions: &[&'static str]) -> Env {
    let e = env().await;
    e.authorize(actions);
    e
}

/// SKEK of "test123" (spec §9 V3), and the 740-byte token ecryptfs-add-passphrase made.
const V3_SKEK: &str = "648eecb6ebfeab9555c92628b892a2b215b85b619bc7cd53dd4b9415c0a7f86181087fa8258d9d9adaa78ae648429fe379db612ccd610bf9834bf644ae60d3f6";

/// A real token as ecryptfs-add-passphrase --fnek makes for "test123": SIG with the
/// default salt, FNEK_SIG with the tools' FNEK salt (spec §9 V1, V2). Other sigs get a
/// forged token (the V3 key under a sig that is not its own).
fn token(sig: &str) -> Vec<u8> {
    use strongroom_core::kdf::{Passphrase, DEFAULT_SALT, FNEK_SALT};
    use strongroom_core::token::AuthToken;
    static CACHE: Mutex<Vec<(String, Vec<u8>)>> = Mutex::new(Vec::new());
    let salt = match sig {
        SIG => DEFAULT_SALT,
        FNEK_SIG => FNEK_SALT,
        _ => return forged(sig),
    };
    let mut cache = CACHE.lock().unwrap();
    if let Some((_, t)) = cache.iter().find(|(s, _)| s == sig) {
        return t.clone();
    }
    let t = AuthToken::from_passphrase(&Passphrase::new("test123").unwrap(), &salt);
    assert_eq!(t.sig().to_hex(), sig);
    let bytes = t.to_bytes().to_vec();
    if sig == SIG {
        assert_eq!(
            &bytes[648..712],
            &hex::decode(V3_SKEK).unwrap()[..],
            "spec V3 key"
        );
    }
    cache.push((sig.to_owned(), bytes.clone()));
    bytes
}

fn forged(sig: &str) -> Vec<u8> {
    let mut t = vec![0u8; 740];
    t[0] = 4;
    t[632..636].copy_from_slice(&10u32.to_le_bytes());
    t[640..644].copy_from_slice(&64u32.to_le_bytes());
    t[644..648].copy_from_slice(&2u32.to_le_bytes());
    t[648..712].copy_from_slice(&hex::decode(V3_SKEK).unwrap());
    t[712..728].copy_from_slice(sig.as_bytes());
    t[729..737].copy_from_slice(&[0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77]);
    t
}

impl Env {
    /// A directory owned by `uid` under the test's temp dir.
    fn dir(&self, name: &str, uid: u32) -> PathBuf {
        let p = self.dirs.path().join(name);
        std::fs::create_dir_all(&p).unwrap();
        chown(&p, Some(uid), Some(uid)).unwrap();
        p
    }

    async fn mount_at(
        &self,
        lower: &Path,
        target: &Path,
        tokens: &[Vec<u8>],
        opts: &MountOptions,
    ) -> Result<MountInfo, Error> {
        let (l, t) = (open_dir(lower), open_dir(target));
        self.mount_fds(&l, &t, tokens, &opts.to_dict()).await
    }

    async fn mount_fds(
        &self,
        l: &OwnedFd,
        t: &OwnedFd,
        tokens: &[Vec<u8>],
        dict: &HashMap<String, Value<'_>>,
    ) -> Result<MountInfo, Error> {
        let refs: Vec<&[u8]> = tokens.iter().map(Vec::as_slice).collect();
        self.proxy
            .mount(Fd::from(l.as_fd()), Fd::from(t.as_fd()), &refs, dict)
            .await
    }

    /// Alice mounts her own vault with the default options.
    async fn mount_own(&self, name: &str) -> Result<MountInfo, Error> {
        let (lower, target) = (
            self.dir(&format!("{name}.lower"), ALICE),
            self.dir(name, ALICE),
        );
        self.mount_sig(&lower, &target).await
    }

    /// Mounts with SIG's real token and the default options.
    async fn mount_sig(&self, lower: &Path, target: &Path) -> Result<MountInfo, Error> {
        self.mount_at(lower, target, &[token(SIG)], &sig_opts())
            .await
    }

    /// Polkit says yes to each of `actions`.
    fn authorize(&self, actions: &[&'static str]) {
        for a in actions {
            self.auth.allow(a, Ok(Verdict::Authorized));
        }
    }

    async fn mounts(&self) -> Vec<MountInfo> {
        self.proxy.list_mounts(&HashMap::new()).await.unwrap()
    }

    async fn unmount(&self, mount_point: &str) -> Result<(), Error> {
        self.proxy.unmount(mount_point, &HashMap::new()).await
    }

    async fn wipe(&self, sigs: &[&str]) -> Result<u32, Error> {
        self.proxy.wipe_tokens(sigs, &HashMap::new()).await
    }

    /// The mount the fake mounter made (the first, when there are several).
    fn recorded(&self) -> FakeMount {
        self.mounter
            .with(|s| s.mounts.values().next().cloned())
            .unwrap()
    }

    fn mount_calls(&self) -> usize {
        self.mounter.with(|s| s.mount_calls)
    }

    fn mounted(&self) -> usize {
        self.mounter.with(|s| s.mounts.len())
    }

    async fn sigs_held(&self) -> Vec<String> {
        self.proxy
            .list_tokens(&HashMap::new())
            .await
            .unwrap()
            .into_iter()
            .map(|t| t.sig)
            .collect()
    }

    /// Nothing happened: no mount attempted, nothing recorded, no token held.
    async fn assert_untouched(&self) {
        assert_eq!(self.mount_calls(), 0, "mounter was called");
        assert!(self.mounts().await.is_empty());
        assert!(self.sigs_held().await.is_empty(), "tokens held");
        assert!(session_search(SIG).is_none(), "token left in the keyring");
    }
}

/// The options of a plain vault keyed by SIG.
fn sig_opts() -> MountOptions {
    MountOptions::new(vec![SIG.into()])
}

/// Pins `p` itself (a symlink is not followed) the way callers send it.
fn open_any(p: &Path) -> OwnedFd {
    open_pinned(p, rustix::fs::OFlags::empty())
}

fn open_dir(p: &Path) -> OwnedFd {
    open_pinned(p, rustix::fs::OFlags::DIRECTORY)
}

fn open_pinned(p: &Path, extra: rustix::fs::OFlags) -> OwnedFd {
    use rustix::fs::{open, Mode, OFlags};
    open(
        p,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC | extra,
        Mode::empty(),
    )
    .unwrap()
}

/// Waits (5 s at most) for the next signal of `stream`.
async fn next_signal<S: futures_util::Stream + Unpin>(stream: &mut S) -> S::Item {
    tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .unwrap()
        .unwrap()
}

fn session_search(sig: &str) -> Option<Vec<u8>> {
    let s = KeyRing::from_special_id(KeyRingIdentifier::Session, false).ok()?;
    s.search(sig).ok().map(|k| k.read_to_vec().unwrap())
}

fn name_of(e: &Error) -> String {
    use zbus::DBusError;
    e.name().to_string()
}

macro_rules! assert_err {
    ($res:expr, $variant:ident) => {{
        match $res {
            Err(Error::$variant(msg)) => msg,
            other => panic!("expected {}, got {other:?}", stringify!($variant)),
        }
    }};
}

// ---------------------------------------------------------------- happy paths

#[test]
fn mounts_lists_and_unmounts_an_own_vault() {
    run(|| async {
        let e = env_authorizing(&[actions::MOUNT, actions::UNMOUNT]).await;
        let mut changes = e.proxy.receive_mounts_changed().await.unwrap();
        let info = e.mount_own("vault").await.unwrap();
        assert_eq!(e.auth.asked(), [(actions::MOUNT, true)]);
        assert_eq!(info.uid, ALICE);
        assert_eq!(info.sigs, [SIG]);
        assert_eq!(
            info.options,
            format!("ecryptfs_sig={SIG},ecryptfs_cipher=aes,ecryptfs_key_bytes=16")
        );
        let target = e.dirs.path().join("vault").canonicalize().unwrap();
        assert_eq!(PathBuf::from(&info.mount_point), target);
        let recorded = e.recorded();
        assert_eq!(recorded.target, target);
        assert_eq!(
            recorded.lower,
            e.dirs.path().join("vault.lower").canonicalize().unwrap()
        );
        assert_eq!(recorded.options, info.options);
        next_signal(&mut changes).await;

        // The token is where the kernel will look for it at mount time.
        assert_eq!(session_search(SIG), Some(token(SIG)));
        let toks = e.proxy.list_tokens(&HashMap::new()).await.unwrap();
        assert_eq!(
            (
                toks.len(),
                toks[0].sig.as_str(),
                toks[0].kind.as_str(),
                toks[0].in_use
            ),
            (1, SIG, "passphrase", true)
        );
        assert_eq!(e.mounts().await, std::slice::from_ref(&info));
        // Another user sees neither Alice's mounts nor her tokens.
        e.auth.be(BOB);
        assert!(e.mounts().await.is_empty());
        assert!(e.sigs_held().await.is_empty());
        e.auth.be(ALICE);

        e.unmount(&info.mount_point).await.unwrap();
        assert_eq!(e.auth.asked()[1], (actions::UNMOUNT, true));
        assert_eq!(e.mounted(), 0);
        assert!(e.mounts().await.is_empty());
        assert!(e.sigs_held().await.is_empty());
        assert!(session_search(SIG).is_none(), "token wiped with the mount");
        next_signal(&mut changes).await;
    });
}

#[test]
fn filename_key_and_options_reach_the_kernel_string() {
    run(|| async {
        let e = env_authorizing(&[actions::MOUNT]).await;
        let mut o = sig_opts();
        o.fnek_sig = Some(FNEK_SIG.into());
        o.cipher = "aes".into();
        o.key_bytes = 32;
        o.xattr_metadata = true;
        o.read_only = true;
        o.no_user_interaction = true;
        let (l, t) = (e.dir("l", ALICE), e.dir("t", ALICE));
        let info = e
            .mount_at(&l, &t, &[token(SIG), token(FNEK_SIG)], &o)
            .await
            .unwrap();
        assert_eq!(
            e.auth.asked(),
            [(actions::MOUNT, false)],
            "no interaction requested"
        );
        assert_eq!(info.fnek_sig, FNEK_SIG);
        assert_eq!(
            info.options,
            format!("ecryptfs_sig={SIG},ecryptfs_fnek_sig={FNEK_SIG},ecryptfs_cipher=aes,ecryptfs_key_bytes=32,ecryptfs_fn_cipher=aes,ecryptfs_fn_key_bytes=32,ecryptfs_xattr_metadata")
        );
        assert!(e.mounter.with(|s| s.mounts.values().all(|m| m.read_only)));
    });
}

#[test]
fn mount_for_others_needs_the_admin_action() {
    // CVE-2011-1833: mount.ecryptfs_private's ownership check of the source directory
    // could be raced; here the check is on the pinned directory and a foreign one
    // needs vault-mount-others (auth_admin).
    run(|| async {
        let e = env_authorizing(&[actions::MOUNT]).await;
        let (lower, target) = (e.dir("bobs.lower", BOB), e.dir("mine", ALICE));
        let res = e.mount_sig(&lower, &target).await;
        assert_err!(res, NotAuthorized);
        assert_eq!(e.auth.asked(), [(actions::MOUNT_OTHERS, true)]);
        e.assert_untouched().await;
        // Foreign mount point, own lower: the same.
        let (lower2, target2) = (e.dir("mine.lower", ALICE), e.dir("bobs", BOB));
        assert_err!(e.mount_sig(&lower2, &target2).await, NotAuthorized);
        assert_eq!(e.auth.asked()[1].0, actions::MOUNT_OTHERS);
        // An administrator may.
        e.authorize(&[actions::MOUNT_OTHERS]);
        e.mount_sig(&lower, &target).await.unwrap();
        assert_eq!(e.mounted(), 1);
    });
}

// ---------------------------------------------------------------- polkit answers

#[test]
fn every_polkit_answer_but_yes_refuses_and_leaves_nothing() {
    run(|| async {
        let e = env().await;
        let cases: [(Result<Verdict, Unavailable>, &str); 4] = [
            (
                Ok(Verdict::NotAuthorized),
                "io.github.strongroom.Helper.Error.NotAuthorized",
            ),
            (
                Ok(Verdict::Challenge),
                "io.github.strongroom.Helper.Error.NotAuthorizedCanObtain",
            ),
            (
                Ok(Verdict::Dismissed),
                "io.github.strongroom.Helper.Error.Dismissed",
            ),
            // polkitd gone: fail closed.
            (
                Err(Unavailable(
                    "org.freedesktop.DBus.Error.ServiceUnknown".into(),
                )),
                "io.github.strongroom.Helper.Error.AuthorityUnavailable",
            ),
        ];
        for (verdict, name) in cases {
            e.auth.allow(actions::MOUNT, verdict);
            let err = e.mount_own("v").await.unwrap_err();
            assert_eq!(name_of(&err), name);
            e.assert_untouched().await;
        }
    });
}

// ---------------------------------------------------------------- validation first

#[test]
fn invalid_requests_are_refused_before_polkit_is_asked() {
    run(|| async {
        let e = env_authorizing(&[actions::MOUNT, actions::MOUNT_OTHERS]).await;
        let (lower, target) = (e.dir("l", ALICE), e.dir("t", ALICE));
        let (l, t) = (open_dir(&lower), open_dir(&target));
        let good = sig_opts().to_dict();
        // One bad option each, sent with SIG's real token. Option injection first, as
        // the old helpers pasted text into the option string.
        let option_cases: Vec<(&str, &str, Value<'static>)> = vec![
            (
                "sig with comma",
                keys::SIGS,
                Value::from(vec![format!("{SIG},ecryptfs_passthrough")]),
            ),
            (
                "sig x,passthrough",
                keys::SIGS,
                Value::from(vec!["x,ecryptfs_passthrough".to_owned()]),
            ),
            (
                "fnek injection",
                keys::FNEK_SIG,
                Value::from(format!("{FNEK_SIG},ecryptfs_passthrough")),
            ),
            (
                "cipher injection",
                keys::CIPHER,
                Value::from("aes,ecryptfs_passthrough"),
            ),
            ("cipher path", keys::CIPHER, Value::from("../../etc/passwd")),
            (
                "cipher spaces",
                keys::CIPHER,
                Value::from("aes ecryptfs_passthrough"),
            ),
            (
                "raw kernel option as key",
                "ecryptfs_passthrough",
                Value::from(true),
            ),
            ("key with equals", "cipher=aes", Value::from(true)),
            ("wrong type", keys::KEY_BYTES, Value::from("16")),
            ("bad key size", keys::KEY_BYTES, Value::from(17u32)),
            ("huge value", keys::CIPHER, Value::from("a".repeat(1 << 20))),
        ];
        let mut dicts: Vec<(&str, HashMap<String, Value<'static>>)> = option_cases
            .into_iter()
            .map(|(what, k, v)| {
                let mut d = good.clone();
                d.insert(k.into(), v);
                (what, d)
            })
            .collect();
        dicts.push(("no sigs", HashMap::new()));
        let huge = (0..10_000).map(|i| (format!("k{i}"), Value::from(true)));
        dicts.push(("10000 options", huge.collect()));
        // SKEK not set: the kernel would wrap with stack garbage.
        let mut bad_token = token(SIG);
        bad_token[644] = 0;
        // The key of SIG under SIG's name, but its sig field names another key.
        let mut mislabelled = token(SIG);
        mislabelled[712..728].copy_from_slice(FNEK_SIG.as_bytes());
        // Bad token sets, sent with good options.
        let token_cases: Vec<(&str, Vec<Vec<u8>>)> = vec![
            ("no token", vec![]),
            (
                "nine tokens",
                (0..9).map(|i| token(&format!("{i:016x}"))).collect(),
            ),
            ("token of 1 MiB", vec![vec![4u8; 1 << 20]]),
            ("empty token", vec![vec![]]),
            ("skek flag unset", vec![bad_token]),
            ("sig field not the key's", vec![mislabelled]),
            ("token for another sig", vec![token(FNEK_SIG)]),
            ("unnamed extra token", vec![token(SIG), token(FNEK_SIG)]),
            ("token twice", vec![token(SIG), token(SIG)]),
        ];
        let cases = dicts
            .into_iter()
            .map(|(what, dict)| (what, dict, vec![token(SIG)]))
            .chain(
                token_cases
                    .into_iter()
                    .map(|(what, tokens)| (what, good.clone(), tokens)),
            );
        for (what, dict, tokens) in cases {
            let res = e.mount_fds(&l, &t, &tokens, &dict).await;
            assert!(
                matches!(res, Err(Error::InvalidArgument(_))),
                "{what}: {res:?}"
            );
        }
        assert!(
            e.auth.asked().is_empty(),
            "polkit asked about an invalid request"
        );
        e.assert_untouched().await;
    });
}

#[test]
fn cve_2011_1831_system_paths_and_non_directories_are_refused() {
    // mount.ecryptfs_private could be made to mount over arbitrary directories. Here
    // system paths are refused for everyone, admin included, before polkit is asked.
    run(|| async {
        let e = env_authorizing(&[actions::MOUNT, actions::MOUNT_OTHERS]).await;
        let lower = open_dir(&e.dir("l", ALICE));
        let target = open_dir(&e.dir("t", ALICE));
        let opts = sig_opts().to_dict();
        for sys in [
            "/etc",
            "/usr",
            "/",
            "/usr/bin",
            "/proc/self",
            "/sys",
            "/dev",
            "/boot",
            "/run",
            "/var",
            "/home",
        ] {
            let p = Path::new(sys);
            if !std::fs::symlink_metadata(p).is_ok_and(|m| m.is_dir()) {
                continue;
            }
            let fd = open_dir(p);
            let msg = assert_err!(
                e.mount_fds(&lower, &fd, &[token(SIG)], &opts).await,
                InvalidArgument
            );
            assert!(msg.contains("system path"), "{sys}: {msg}");
            assert_err!(
                e.mount_fds(&fd, &target, &[token(SIG)], &opts).await,
                InvalidArgument
            );
        }
        // A regular file, a symlink pinned by O_PATH|O_NOFOLLOW, a socket.
        let file = e.dirs.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        let link = e.dirs.path().join("link");
        std::os::unix::fs::symlink("/etc", &link).unwrap();
        let (s1, _s2) = std::os::unix::net::UnixStream::pair().unwrap();
        let sock: OwnedFd = s1.into();
        for (what, fd) in [
            ("file", open_any(&file)),
            ("symlink", open_any(&link)),
            ("socket", sock),
        ] {
            let msg = assert_err!(
                e.mount_fds(&lower, &fd, &[token(SIG)], &opts).await,
                InvalidArgument
            );
            assert!(
                msg.contains("not refer to a directory") || msg.contains("not reachable"),
                "{what}: {msg}"
            );
        }
        assert!(e.auth.asked().is_empty());
        e.assert_untouched().await;
    });
}

#[test]
fn cve_2011_1831_symlink_swapped_in_after_validation_changes_nothing() {
    // The classic race: the helper checks a path, the attacker replaces it by a link
    // to /etc, the helper mounts there. With descriptors the mount goes to the
    // directory that was checked, wherever it now is.
    run(|| async {
        let e = env_authorizing(&[actions::MOUNT]).await;
        let lower = e.dir("l", ALICE);
        let target = e.dir("t", ALICE);
        let (lfd, tfd) = (open_dir(&lower), open_dir(&target));
        let moved = e.dirs.path().join("t.moved");
        let (t2, m2) = (target.clone(), moved.clone());
        // Swap while polkit is being asked, i.e. after every check has run.
        *e.auth.during_check.lock().unwrap() = Some(Box::new(move || {
            std::fs::rename(&t2, &m2).unwrap();
            std::os::unix::fs::symlink("/etc", &t2).unwrap();
        }));
        e.mount_fds(&lfd, &tfd, &[token(SIG)], &sig_opts().to_dict())
            .await
            .unwrap();
        let m = e.recorded();
        assert_eq!(
            m.target,
            moved.canonicalize().unwrap(),
            "mounted where the checked directory is"
        );
        assert_ne!(m.target, PathBuf::from("/etc"));
        // Swapped before the call: the descriptor still pins the original directory.
        let l2 = e.dir("l2", ALICE);
        let victim = e.dir("v2", ALICE);
        let vfd = open_dir(&victim);
        std::fs::rename(&victim, e.dirs.path().join("v2.moved")).unwrap();
        std::os::unix::fs::symlink("/usr", &victim).unwrap();
        e.mount_fds(&open_dir(&l2), &vfd, &[token(SIG)], &sig_opts().to_dict())
            .await
            .unwrap();
        assert!(e.mounter.with(|s| s
            .mounts
            .values()
            .all(|m| !m.target.starts_with("/usr") && !m.target.starts_with("/etc"))));
    });
}

#[test]
fn already_mounted_and_mounts_under_way() {
    run(|| async {
        let e = env_authorizing(&[actions::MOUNT]).await;
        e.mount_own("v").await.unwrap();
        assert_err!(e.mount_own("v").await, AlreadyMounted);
        // Same lower directory, other mount point.
        let other = e.dir("elsewhere", ALICE);
        assert_err!(
            e.mount_at(
                &e.dirs.path().join("v.lower"),
                &other,
                &[token(SIG)],
                &sig_opts()
            )
            .await,
            AlreadyMounted
        );
        // A real mount root (here: /proc is refused earlier; use the tempfs root if any).
        // While a mount waits for polkit, a second one of the same directory is busy.
        let gate = Arc::new(tokio::sync::Notify::new());
        *e.auth.gate.lock().unwrap() = Some(gate.clone());
        let (l, t) = (e.dir("w.lower", ALICE), e.dir("w", ALICE));
        let (lf, tf) = (open_dir(&l), open_dir(&t));
        let dict = sig_opts().to_dict();
        let toks = [token(SIG)];
        let first = e.mount_fds(&lf, &tf, &toks, &dict);
        let second = async {
            while e.auth.asked().len() < 2 {
                tokio::task::yield_now().await;
            }
            let r = e.mount_fds(&lf, &tf, &toks, &dict).await;
            gate.notify_one();
            r
        };
        let (a, b) = tokio::join!(first, second);
        a.unwrap();
        assert_err!(b, Busy);
    });
}

#[test]
fn mount_failures_roll_back_tokens() {
    run(|| async {
        let e = env_authorizing(&[actions::MOUNT]).await;
        e.mounter.with(|s| s.fail_next = Some(MountError::Busy));
        assert_err!(e.mount_own("v").await, Busy);
        e.mounter
            .with(|s| s.fail_next = Some(MountError::NotSupported("ENODEV".into())));
        assert_err!(e.mount_own("v").await, NotSupported);
        e.mounter
            .with(|s| s.fail_next = Some(MountError::Failed("EINVAL".into())));
        assert_err!(e.mount_own("v").await, Failed);
        assert!(e.sigs_held().await.is_empty());
        assert!(session_search(SIG).is_none());
        assert!(e.mounts().await.is_empty());
    });
}

#[test]
fn kernel_without_ecryptfs_or_messaging_is_not_supported() {
    run(|| async {
        let e = env_with(1000, false).await;
        e.authorize(&[actions::MOUNT]);
        assert_err!(e.mount_own("v").await, NotSupported);
        let k = e.proxy.kernel_support().await.unwrap();
        assert!(!k.available && !k.loadable);
        assert!(e.auth.asked().is_empty());
        assert_eq!(e.mount_calls(), 0);
        // A private-key (tag 1) token needs /dev/ecryptfs messaging.
        let e = env_authorizing(&[actions::MOUNT]).await;
        let blob = b"\x05\x00/k.pem\x00\x02\x00p\x00";
        let mut pk = vec![0u8; 740];
        pk[0] = 4;
        pk[2] = 1;
        pk[632..636].copy_from_slice(&(blob.len() as u32).to_le_bytes());
        pk[636..652].copy_from_slice(SIG.as_bytes());
        pk[653..660].copy_from_slice(b"openssl");
        pk.extend_from_slice(blob);
        let (l, t) = (e.dir("l", ALICE), e.dir("t", ALICE));
        assert_err!(e.mount_at(&l, &t, &[pk], &sig_opts()).await, NotSupported);
        let k = e.proxy.kernel_support().await.unwrap();
        assert_eq!(
            (k.available, k.version_bits, k.messaging),
            (true, 309, false)
        );
    });
}

// ---------------------------------------------------------------- unmount

#[test]
fn cve_2011_1832_unmounting_anything_else_is_refused() {
    // umount.ecryptfs_private could be made to unmount arbitrary mounts. The helper
    // unmounts only what its books hold, and another user's vault only as admin.
    run(|| async {
        let e = env_authorizing(&[actions::MOUNT, actions::UNMOUNT]).await;
        e.auth.be(BOB);
        let (l, t) = (e.dir("b.lower", BOB), e.dir("b", BOB));
        let bobs = e.mount_sig(&l, &t).await.unwrap();
        e.auth.be(ALICE);
        let before = e.auth.asked().len();
        for path in [
            "/",
            "/etc",
            "/proc",
            "/home/../etc",
            &format!("{}/../b", bobs.mount_point),
            &format!("{}/", bobs.mount_point),
        ] {
            assert_err!(e.unmount(path).await, NotMounted);
        }
        for path in ["relative/path".to_owned(), format!("/{}", "a".repeat(5000))] {
            assert_err!(e.unmount(&path).await, InvalidArgument);
        }
        assert_eq!(
            e.auth.asked().len(),
            before,
            "polkit asked about paths not in the books"
        );
        let msg = assert_err!(e.unmount(&bobs.mount_point).await, NotAuthorized);
        assert!(msg.contains(actions::UNMOUNT_OTHERS));
        assert_eq!(e.auth.asked().last().unwrap().0, actions::UNMOUNT_OTHERS);
        assert_eq!(e.mounted(), 1, "Bob's vault is still mounted");
        e.auth.be(BOB);
        assert!(
            e.sigs_held().await.contains(&SIG.to_owned()),
            "Bob's token is still held"
        );
        // The administrator may.
        e.auth.be(ALICE);
        e.authorize(&[actions::UNMOUNT_OTHERS]);
        e.unmount(&bobs.mount_point).await.unwrap();
        assert_eq!(e.mounted(), 0);
        e.auth.be(BOB);
        assert!(
            e.sigs_held().await.is_empty(),
            "Bob's token released with his mount"
        );
    });
}

#[test]
fn busy_and_vanished_mounts() {
    run(|| async {
        let e = env_authorizing(&[actions::MOUNT, actions::UNMOUNT]).await;
        let info = e.mount_own("v").await.unwrap();
        e.mounter.with(|s| s.busy = true);
        // The message names who keeps it busy (here: a process working inside).
        let mut holder = std::process::Command::new("sleep")
            .arg("30")
            .current_dir(&info.mount_point)
            .spawn()
            .unwrap();
        let msg = assert_err!(e.unmount(&info.mount_point).await, Busy);
        let _ = holder.kill();
        let _ = holder.wait();
        assert!(msg.contains(&format!("sleep ({})", holder.id())), "{msg}");
        assert_eq!(e.mounts().await.len(), 1);
        e.mounter.with(|s| s.busy = false);
        // Unmounted behind the helper's back: the books follow, tokens are released.
        e.mounter.with(|s| s.mounts.clear());
        assert!(e.mounts().await.is_empty());
        assert!(e.sigs_held().await.is_empty());
        assert_err!(e.unmount(&info.mount_point).await, NotMounted);
    });
}

// ---------------------------------------------------------------- tokens

#[test]
fn tokens_can_be_kept_listed_and_wiped() {
    run(|| async {
        let e = env_authorizing(&[actions::MOUNT, actions::UNMOUNT]).await;
        let info = e.mount_own("v").await.unwrap();
        assert_err!(e.wipe(&[SIG]).await, NotAuthorized);
        e.authorize(&[actions::WIPE_KEYS]);
        assert_err!(e.wipe(&[SIG]).await, Busy);
        assert_eq!(e.wipe(&[]).await.unwrap(), 0, "in use: kept");
        for bad in ["x,y", "2A97418EDCA01EB9", ""] {
            assert_err!(e.wipe(&[bad]).await, InvalidArgument);
        }
        let keep = UnmountOptions {
            keep_tokens: true,
            ..Default::default()
        };
        e.proxy
            .unmount(&info.mount_point, &keep.to_dict())
            .await
            .unwrap();
        let toks = e.proxy.list_tokens(&HashMap::new()).await.unwrap();
        assert_eq!((toks.len(), toks[0].in_use), (1, false));
        // Bob's wipe does not touch Alice's token.
        e.auth.be(BOB);
        assert_eq!(e.wipe(&[]).await.unwrap(), 0);
        e.auth.be(ALICE);
        assert_eq!(e.wipe(&[]).await.unwrap(), 1);
        assert!(e.sigs_held().await.is_empty());
        assert!(session_search(SIG).is_none());
    });
}

#[test]
fn cve_2011_1835_key_material_never_reaches_disk_or_errors() {
    // ecryptfs-setup-private briefly left the mount passphrase readable on disk. The
    // helper writes only sigs and names to its ledger, and never echoes a token.
    run(|| async {
        let e = env_authorizing(&[actions::MOUNT]).await;
        e.mount_own("v").await.unwrap();
        let ledger = std::fs::read(e.ledger_dir.join("mounts.json")).unwrap();
        let skek = hex::decode(V3_SKEK).unwrap();
        assert!(!ledger.windows(16).any(|w| w == &skek[..16]));
        assert!(!String::from_utf8_lossy(&ledger).contains(&V3_SKEK[..32]));
        let mut t = token(FNEK_SIG);
        t[0] = 9;
        let (l, tg) = (e.dir("l", ALICE), e.dir("t", ALICE));
        let err = e
            .mount_at(&l, &tg, &[t], &MountOptions::new(vec![FNEK_SIG.into()]))
            .await
            .unwrap_err();
        let text = format!("{err} {err:?}");
        assert!(
            !text.contains("648e") && !text.contains("100, 142"),
            "{text}"
        );
    });
}

// ---------------------------------------------------------------- flooding, malformed calls

#[test]
fn flooding_is_rate_limited_per_caller() {
    run(|| async {
        let e = env_with(10, true).await;
        let mut limited = 0;
        for _ in 0..40 {
            match e.proxy.kernel_support().await {
                Ok(_) => {}
                Err(Error::RateLimited(_)) => limited += 1,
                Err(other) => panic!("{other:?}"),
            }
        }
        assert!(limited >= 29, "only {limited} of 40 calls limited");
        // A flood of mount attempts never reaches polkit or the mounter once limited.
        e.authorize(&[actions::MOUNT]);
        assert_err!(e.mount_own("v").await, RateLimited);
        assert!(e.auth.asked().is_empty());
        assert_eq!(e.mount_calls(), 0);
        // Other users are not affected.
        e.auth.be(BOB);
        e.proxy.kernel_support().await.unwrap();
    });
}

impl Env {
    /// A method call with any body, past the typed proxy.
    async fn call_raw<B>(&self, method: &str, body: &B) -> zbus::Result<zbus::Message>
    where
        B: serde::Serialize + zbus::zvariant::DynamicType,
    {
        self.client
            .call_method(
                Some("io.github.strongroom.Helper"),
                OBJECT_PATH,
                Some("io.github.strongroom.Helper1"),
                method,
                body,
            )
            .await
    }
}

#[test]
fn malformed_calls_get_the_bus_error() {
    run(|| async {
        let e = env().await;
        // Strings where descriptors belong: zbus refuses the signature.
        let reply = e
            .call_raw(
                "Mount",
                &(
                    "/home",
                    "/etc",
                    Vec::<Vec<u8>>::new(),
                    HashMap::<String, Value<'_>>::new(),
                ),
            )
            .await;
        match reply {
            // zbus answers before any helper code runs (none of the helper's errors).
            Err(zbus::Error::MethodError(name, _, _)) => {
                assert!(!name.starts_with("io.github.strongroom"), "{name}")
            }
            other => panic!("{other:?}"),
        }
        let reply = e.call_raw("Unmount", &(42u32,)).await;
        assert!(matches!(reply, Err(zbus::Error::MethodError(..))));
        assert_eq!(e.mount_calls(), 0);
    });
}

// ---------------------------------------------------------------- the contract

#[test]
fn introspection_matches_the_data_file() {
    run(|| async {
        let e = env().await;
        let xml = zbus::fdo::IntrospectableProxy::builder(&e.client)
            .destination("io.github.strongroom.Helper")
            .unwrap()
            .path(OBJECT_PATH)
            .unwrap()
            .build()
            .await
            .unwrap()
            .introspect()
            .await
            .unwrap();
        let exported = interface_block(&xml).expect("interface exported");
        let file = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../data/io.github.strongroom.Helper1.xml"
        ))
        .unwrap();
        let documented = interface_block(&file).expect("interface in data file");
        assert_eq!(
            documented, exported,
            "data/io.github.strongroom.Helper1.xml differs from the exported interface"
        );
    });
}

/// The `<interface name="io.github.strongroom.Helper1">` element, whitespace-normalized,
/// comments dropped.
fn interface_block(xml: &str) -> Option<String> {
    let mut text = String::new();
    let mut rest = xml;
    while let Some(i) = rest.find("<!--") {
        text.push_str(&rest[..i]);
        rest = &rest[rest[i..].find("-->")? + i + 3..];
    }
    text.push_str(rest);
    let start = text.find(r#"<interface name="io.github.strongroom.Helper1">"#)?;
    let end = text[start..].find("</interface>")? + start + "</interface>".len();
    Some(
        text[start..end]
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .replace("> <", "><"),
    )
}

// ---------------------------------------------------------------- public-key vaults

/// A helper whose simulated kernel has /dev/ecryptfs messaging; `device` stands in for
/// the device (a FIFO opens read-write like it; the kernel side is tested in the VM).
async fn env_pk(device: PathBuf) -> Env {
    let e = env_full(1000, true, device).await;
    let mut k = e.mounter.kernel_support();
    k.version_bits = 375;
    k.messaging = true;
    e.mounter.with(|s| s.support = Some(k));
    e.authorize(&[actions::MOUNT, actions::UNMOUNT]);
    e
}

fn fifo(dir: &Path) -> PathBuf {
    let p = dir.join("ecryptfs");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &p,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    p
}

/// An RSA key as a caller sends it, and its sig as strongroom-core computes it.
fn rsa_key() -> (Vec<u8>, String) {
    let rsa = openssl::rsa::Rsa::generate(1024).unwrap();
    let pem = rsa.private_key_to_pem().unwrap();
    let pass = strongroom_core::kdf::Passphrase::new("x").unwrap();
    let sig = strongroom_core::pubkey::RsaKeyPair::from_private_pem(&pem, &pass)
        .unwrap()
        .sig()
        .to_hex();
    (rsa.private_key_to_der().unwrap(), sig)
}

impl Env {
    async fn mount_with_keys(
        &self,
        name: &str,
        tokens: &[Vec<u8>],
        key: &[u8],
        opts: &MountOptions,
    ) -> Result<MountInfo, Error> {
        let uid = *self.auth.uid.lock().unwrap();
        let l = open_dir(&self.dir(&format!("{name}.lower"), uid));
        let t = open_dir(&self.dir(name, uid));
        let refs: Vec<&[u8]> = tokens.iter().map(Vec::as_slice).collect();
        self.proxy
            .mount_with_keys(
                Fd::from(l.as_fd()),
                Fd::from(t.as_fd()),
                &refs,
                &[key],
                &opts.to_dict(),
            )
            .await
    }
}

/// The uid line (real, effective, saved, fs) and the effective capabilities of the
/// helper's daemon thread for `uid`.
fn daemon_thread_uids(uid: u32) -> Option<String> {
    std::fs::read_dir("/proc/self/task").ok()?.find_map(|t| {
        let t = t.ok()?.path();
        let comm = std::fs::read_to_string(t.join("comm")).ok()?;
        (comm.trim() == format!("pkd-{uid}")).then(|| {
            let status = std::fs::read_to_string(t.join("status")).unwrap_or_default();
            let field = |name: &str| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix(name))
                    .unwrap_or_default()
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            format!("{} caps {}", field("Uid:"), field("CapEff:"))
        })
    })
}

#[test]
fn public_key_vaults_bring_their_key_and_the_daemon_lives_with_the_mounts() {
    run(|| async {
        let state = tempfile::tempdir().unwrap();
        let e = env_pk(fifo(state.path())).await;
        let (der, sig) = rsa_key();
        let opts = MountOptions::new(vec![sig.clone()]);

        // Refused before polkit: a broken key, a key the options do not name, a
        // private-key token (the helper makes those), a passphrase token left unnamed.
        assert_err!(
            e.mount_with_keys("v", &[], &der[..der.len() - 1], &opts)
                .await,
            InvalidArgument
        );
        let other = sig_opts();
        assert_err!(
            e.mount_with_keys("v", &[], &der, &other).await,
            InvalidArgument
        );
        assert_err!(
            e.mount_with_keys("v", &[token(SIG)], &der, &opts).await,
            InvalidArgument
        );
        let pk_token = strongroom_core::token::AuthToken::private_key(
            sig.parse().unwrap(),
            "openssl",
            zeroize::Zeroizing::new(Vec::new()),
        )
        .unwrap()
        .to_bytes()
        .to_vec();
        let (l, t) = (e.dir("w.lower", ALICE), e.dir("w", ALICE));
        let msg = assert_err!(
            e.mount_at(&l, &t, &[pk_token], &opts).await,
            InvalidArgument
        );
        assert!(msg.contains("MountWithKeys"), "{msg}");
        assert!(e.auth.asked().is_empty());
        assert_eq!(e.mount_calls(), 0);

        // Mounted: the kernel's token is in the keyring, the daemon runs with Alice's
        // euid (the kernel picks daemons by the euid that opened the device).
        let info = e.mount_with_keys("v", &[], &der, &opts).await.unwrap();
        assert_eq!(info.sigs, [sig.as_str()]);
        assert_eq!(e.sigs_held().await, [sig.as_str()]);
        let tokens = e.proxy.list_tokens(&HashMap::new()).await.unwrap();
        assert_eq!(tokens[0].kind, "private-key");
        assert!(tokens[0].in_use);
        let session = KeyRing::from_special_id(KeyRingIdentifier::Session, false).unwrap();
        let payload = session.search(&sig).unwrap().read_to_vec().unwrap();
        assert_eq!(payload.len(), 740, "no key material in the keyring");
        assert_eq!(
            u16::from_ne_bytes([payload[2], payload[3]]),
            1,
            "ECRYPTFS_PRIVATE_KEY"
        );
        assert_eq!(e.helper.daemon_uids(), [ALICE]);
        assert_eq!(
            daemon_thread_uids(ALICE).as_deref(),
            Some(format!("0 {ALICE} 0 {ALICE} caps 0000000000000000").as_str()),
            "the thread that parses kernel input runs as Alice, without capabilities"
        );
        assert!(!e.helper.idle().1, "holds a key");

        // A second vault with the same key: the same daemon.
        let info2 = e.mount_with_keys("v2", &[], &der, &opts).await.unwrap();
        assert_eq!(e.helper.daemon_uids(), [ALICE]);
        let none = UnmountOptions::default().to_dict();
        e.proxy.unmount(&info.mount_point, &none).await.unwrap();
        assert_eq!(e.helper.daemon_uids(), [ALICE], "v2 still uses the key");
        e.proxy.unmount(&info2.mount_point, &none).await.unwrap();
        assert!(
            e.helper.daemon_uids().is_empty(),
            "the last mount took the key"
        );
        assert!(daemon_thread_uids(ALICE).is_none(), "the thread ended");
        assert!(e.sigs_held().await.is_empty());
        assert!(e.helper.idle().1);
    });
}

#[test]
fn a_daemon_that_cannot_start_leaves_nothing_behind() {
    run(|| async {
        let state = tempfile::tempdir().unwrap();
        let e = env_pk(state.path().join("no-such-device")).await;
        // Bob: the other test's check that Alice's daemon thread ended stays exact.
        e.auth.be(BOB);
        let (der, sig) = rsa_key();
        let msg = assert_err!(
            e.mount_with_keys("v", &[], &der, &MountOptions::new(vec![sig]))
                .await,
            Failed
        );
        assert!(msg.contains("no-such-device"), "{msg}");
        assert_eq!(
            (e.mount_calls(), e.mounted()),
            (1, 0),
            "mounted, then undone"
        );
        assert!(e.sigs_held().await.is_empty());
        assert!(e.helper.daemon_uids().is_empty());
        assert!(e.helper.idle().1);
    });
}
