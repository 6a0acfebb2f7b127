//! The `io.github.strongroom.Helper1` object: validate, then authorize the caller, then act.

use std::collections::{HashMap, HashSet};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use zbus::message::Header;
use zbus::names::UniqueName;
use zbus::object_server::SignalEmitter;
use zbus::zvariant::{OwnedFd, OwnedValue};
use zeroize::Zeroizing;

use strongroom_core::kdf::Sig;
use strongroom_core::pubkey::{RsaKeyPair, MODULE_ALIAS};
use strongroom_core::token::AuthToken;
use strongroom_dbus::options::{is_sig, parse_plain_options, MAX_TOKENS};
use strongroom_dbus::types::TOKEN_KIND_PRIVATE_KEY;
use strongroom_dbus::{
    actions, Error, KernelSupport, MountInfo, MountOptions, TokenInfo, UnmountOptions,
};

use crate::authority::{Authority, Caller, Verdict};
use crate::kernel;
use crate::keystore::{StoreError, TokenStore};
use crate::ledger::{Entry, Ledger};
use crate::mounter::{MountError, MountRequest, Mounter};
use crate::paths::{self, PathError};
use crate::pkd::{parse_private_key, PkDaemons};
use crate::ratelimit::RateLimiter;
use crate::token::Token;

/// Longest mount point path `Unmount` accepts (PATH_MAX).
const MAX_PATH: usize = 4096;
/// At most this many sigs in one `WipeTokens` call.
const MAX_WIPE: usize = 64;

/// Settings of a helper instance.
#[derive(Debug, Clone)]
pub struct Config {
    /// Calls a caller may make at once, then `per_second`.
    pub burst: u32,
    pub per_second: f64,
    /// The device the public-key daemons serve.
    pub dev_ecryptfs: PathBuf,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            burst: 20,
            per_second: 2.0,
            dev_ecryptfs: "/dev/ecryptfs".into(),
        }
    }
}

struct State {
    ledger: Ledger,
    tokens: TokenStore,
    /// Private keys of public-key (tag 1) tokens, served on /dev/ecryptfs per uid.
    daemons: PkDaemons,
    limiter: RateLimiter,
    /// Directories (dev, ino) with a mount under way (authorization can take minutes).
    pending: HashSet<((u32, u32), u64)>,
    last_call: Instant,
}

/// The helper object. Cheap to clone (shared state).
#[derive(Clone)]
pub struct Helper {
    authority: Arc<dyn Authority>,
    mounter: Arc<dyn Mounter>,
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for Helper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Helper").finish_non_exhaustive()
    }
}

fn invalid(e: impl std::fmt::Display) -> Error {
    Error::InvalidArgument(e.to_string())
}

fn path_error(which: &str, e: PathError) -> Error {
    invalid(format!("{which}: {e}"))
}

fn store_error(e: StoreError) -> Error {
    match e {
        StoreError::Conflict(_) => Error::Busy(e.to_string()),
        _ => Error::Failed(e.to_string()),
    }
}

fn mount_error(e: MountError) -> Error {
    match e {
        MountError::Busy => Error::Busy("the mount is in use".into()),
        MountError::NotSupported(m) => Error::NotSupported(m),
        MountError::Gone => Error::NotMounted("no such mount".into()),
        other => Error::Failed(other.to_string()),
    }
}

/// Removes a pending-mount mark when the call ends, however it ends.
struct PendingGuard {
    state: Arc<Mutex<State>>,
    keys: Vec<((u32, u32), u64)>,
}

impl Drop for PendingGuard {
    fn drop(&mut self) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        for k in &self.keys {
            st.pending.remove(k);
        }
    }
}

impl Helper {
    pub fn new(
        authority: Arc<dyn Authority>,
        mounter: Arc<dyn Mounter>,
        ledger: Ledger,
        tokens: TokenStore,
        config: Config,
    ) -> Helper {
        let state = State {
            ledger,
            tokens,
            daemons: PkDaemons::new(config.dev_ecryptfs),
            limiter: RateLimiter::new(config.burst, config.per_second),
            pending: HashSet::new(),
            last_call: Instant::now(),
        };
        let helper = Helper {
            authority,
            mounter,
            state: Arc::new(Mutex::new(state)),
        };
        helper.forget_vanished();
        helper
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere must not wedge the service; the state stays consistent
        // because every change is committed to disk before memory.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Time since the last call, and whether the helper holds nothing that would be
    /// lost if it exited (tokens, private keys, mounts under way).
    pub fn idle(&self) -> (Duration, bool) {
        let st = self.lock();
        (
            st.last_call.elapsed(),
            st.tokens.is_empty() && st.daemons.is_empty() && st.pending.is_empty(),
        )
    }

    /// Uids whose /dev/ecryptfs daemon runs (for tests and diagnostics).
    pub fn daemon_uids(&self) -> Vec<u32> {
        self.lock().daemons.uids()
    }

    /// Drop ledger entries whose mount is gone (unmounted behind the helper's back).
    pub fn forget_vanished(&self) {
        let mut st = self.lock();
        let mounter = self.mounter.clone();
        match st.ledger.retain(|e| mounter.is_live(e.mnt_id)) {
            Ok(gone) => {
                for e in gone {
                    log::info!("mount {} vanished; forgetting it", e.info.mount_point);
                    release_tokens(&mut st, &e);
                }
            }
            Err(e) => log::warn!("{e}"),
        }
    }

    async fn caller(&self, sender: Option<UniqueName<'static>>) -> Result<Caller, Error> {
        let caller = self
            .authority
            .identify(sender)
            .await
            .map_err(|e| Error::AuthorityUnavailable(e.0))?;
        let mut st = self.lock();
        st.last_call = Instant::now();
        if !st.limiter.allow(caller.uid, Instant::now()) {
            return Err(Error::RateLimited(format!(
                "too many calls from uid {}",
                caller.uid
            )));
        }
        Ok(caller)
    }

    async fn authorize(
        &self,
        caller: &Caller,
        action: &'static str,
        interactive: bool,
    ) -> Result<(), Error> {
        let verdict = self.authority.check(caller, action, interactive).await;
        log::info!("uid {} {action}: {verdict:?}", caller.uid);
        match verdict {
            Ok(Verdict::Authorized) => Ok(()),
            Ok(Verdict::NotAuthorized) => {
                Err(Error::NotAuthorized(format!("not authorized for {action}")))
            }
            Ok(Verdict::Challenge) if interactive => Err(Error::NotAuthorizedCanObtain(format!(
                "{action} needs authentication and no authentication agent answered"
            ))),
            Ok(Verdict::Challenge) => Err(Error::NotAuthorizedCanObtain(format!(
                "{action} needs authentication, but auth.no_user_interaction was set"
            ))),
            Ok(Verdict::Dismissed) => Err(Error::Dismissed(format!(
                "authentication for {action} was dismissed"
            ))),
            Err(e) => Err(Error::AuthorityUnavailable(format!(
                "cannot ask polkit, refusing: {e}"
            ))),
        }
    }

    async fn do_mount(
        &self,
        sender: Option<UniqueName<'static>>,
        lower: OwnedFd,
        mount_point: OwnedFd,
        tokens: Vec<Vec<u8>>,
        private_keys: Vec<Vec<u8>>,
        options: HashMap<String, OwnedValue>,
    ) -> Result<MountInfo, Error> {
        // Secrets go into zeroizing storage before anything can fail.
        let tokens: Vec<Zeroizing<Vec<u8>>> = tokens.into_iter().map(Zeroizing::new).collect();
        let private_keys: Vec<Zeroizing<Vec<u8>>> =
            private_keys.into_iter().map(Zeroizing::new).collect();
        let caller = self.caller(sender).await?;

        // 1. Validate everything, cheapest first; polkit is asked only about a request
        //    that could be carried out.
        let opts = MountOptions::from_dict(&options).map_err(invalid)?;
        let count = tokens.len() + private_keys.len();
        if count == 0 || count > MAX_TOKENS {
            return Err(invalid(format!(
                "need 1 to {MAX_TOKENS} tokens and private keys, got {count}"
            )));
        }
        let mut tokens: Vec<Token> = tokens
            .into_iter()
            .enumerate()
            .map(|(i, t)| Token::parse(t).map_err(|e| invalid(format!("token {i}: {e}"))))
            .collect::<Result<_, _>>()?;
        let support = self.mounter.kernel_support();
        if !support.available && !support.loadable {
            return Err(Error::NotSupported("this kernel has no eCryptfs".into()));
        }
        let public_key =
            !private_keys.is_empty() || tokens.iter().any(|t| t.kind == TOKEN_KIND_PRIVATE_KEY);
        // A module not loaded yet is probed after the mount loaded it (daemon start).
        if public_key && !support.messaging && !support.loadable {
            return Err(Error::NotSupported(
                "public-key tokens need the kernel's /dev/ecryptfs messaging, which is not available".into(),
            ));
        }
        if tokens.iter().any(|t| t.kind == TOKEN_KIND_PRIVATE_KEY) {
            // The kernel asks the helper's daemon, which needs the key itself; a token
            // naming a key file would have root open a path the caller chose.
            return Err(invalid(
                "public-key vaults take their private key (MountWithKeys), not a private-key token",
            ));
        }
        let mut keys: Vec<Arc<RsaKeyPair>> = Vec::new();
        for (i, der) in private_keys.iter().enumerate() {
            let pair =
                parse_private_key(der).map_err(|e| invalid(format!("private key {i}: {e}")))?;
            tokens.push(private_key_token(pair.sig())?);
            keys.push(Arc::new(pair));
        }
        check_token_coverage(&opts, &tokens)?;
        let lower_dir =
            paths::inspect(lower.as_fd()).map_err(|e| path_error("lower directory", e))?;
        let target =
            paths::inspect(mount_point.as_fd()).map_err(|e| path_error("mount point", e))?;
        if target.mount_root {
            return Err(Error::AlreadyMounted(format!(
                "{} is already a mount point",
                target.path.display()
            )));
        }
        let _pending = {
            let mut st = self.lock();
            let as_str = |p: &PathBuf| p.to_string_lossy().into_owned();
            if let Some(e) = st.ledger.entries().iter().find(|e| {
                e.info.mount_point == as_str(&target.path)
                    || e.info.lower == as_str(&lower_dir.path)
            }) {
                return Err(Error::AlreadyMounted(format!(
                    "{} is mounted at {}",
                    e.info.lower, e.info.mount_point
                )));
            }
            let keys = vec![(lower_dir.dev, lower_dir.ino), (target.dev, target.ino)];
            if keys.iter().any(|k| st.pending.contains(k)) {
                return Err(Error::Busy("a mount of this directory is under way".into()));
            }
            st.pending.extend(keys.iter().copied());
            PendingGuard {
                state: self.state.clone(),
                keys,
            }
        };

        // 2. Authorize the caller (its bus name), for its own directories or as admin.
        let own = lower_dir.uid == caller.uid && target.uid == caller.uid;
        let action = if own {
            actions::MOUNT
        } else {
            actions::MOUNT_OTHERS
        };
        self.authorize(&caller, action, !opts.no_user_interaction)
            .await?;

        // 3. Act: tokens into the keyring the kernel searches, mount, record.
        let mut st = self.lock();
        let mut added: Vec<&str> = Vec::new();
        for t in &tokens {
            if st.tokens.holds(caller.uid, &t.sig) {
                continue;
            }
            if let Err(e) = st.tokens.add(caller.uid, t) {
                undo_tokens(&mut st, caller.uid, &added);
                return Err(store_error(e));
            }
            added.push(&t.sig);
        }
        let option_string = match kernel::option_string(&opts) {
            Ok(s) => s,
            Err(e) => {
                undo_tokens(&mut st, caller.uid, &added);
                return Err(Error::InvalidArgument(e));
            }
        };
        let request = MountRequest {
            lower: lower.as_fd(),
            target: mount_point.as_fd(),
            target_path: &target.path,
            options: &option_string,
            read_only: opts.read_only || opts.encrypted_view,
        };
        let mnt_id = match self.mounter.mount(&request) {
            Ok(id) => id,
            Err(e) => {
                undo_tokens(&mut st, caller.uid, &added);
                log::warn!(
                    "mount of {} for uid {} failed: {e}",
                    target.path.display(),
                    caller.uid
                );
                return Err(mount_error(e));
            }
        };
        // The daemon after the mount: mounting loads the module, which makes the
        // device. The kernel asks it only when a file is opened or created.
        for key in &keys {
            if !added.contains(&key.sig().to_hex().as_str()) {
                continue; // held already, so served already
            }
            if let Err(e) = st.daemons.add(caller.uid, key.clone()) {
                let _ = self.mounter.unmount(mnt_id, true);
                undo_tokens(&mut st, caller.uid, &added);
                log::warn!("{e}");
                return Err(Error::Failed(e.to_string()));
            }
        }
        drop(keys);
        let info = MountInfo {
            mount_point: target.path.to_string_lossy().into_owned(),
            lower: lower_dir.path.to_string_lossy().into_owned(),
            uid: caller.uid,
            sigs: opts.sigs.clone(),
            fnek_sig: opts.fnek_sig.clone().unwrap_or_default(),
            options: option_string.clone(),
            mounted_at: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        };
        if let Err(e) = st.ledger.insert(Entry {
            info: info.clone(),
            mnt_id,
        }) {
            // Never keep a mount the books do not know about.
            let _ = self.mounter.unmount(mnt_id, true);
            undo_tokens(&mut st, caller.uid, &added);
            return Err(Error::Failed(e.to_string()));
        }
        log::info!(
            "uid {} mounted {} on {}",
            caller.uid,
            info.lower,
            info.mount_point
        );
        Ok(info)
    }

    async fn do_unmount(
        &self,
        sender: Option<UniqueName<'static>>,
        mount_point: String,
        options: HashMap<String, OwnedValue>,
    ) -> Result<(), Error> {
        let caller = self.caller(sender).await?;
        let opts = UnmountOptions::from_dict(&options).map_err(invalid)?;
        if mount_point.len() > MAX_PATH
            || !mount_point.starts_with('/')
            || mount_point.contains('\0')
        {
            return Err(invalid(
                "mount point must be an absolute path of at most 4096 bytes",
            ));
        }
        // Only mounts in the books: the helper unmounts nothing it did not mount.
        let entry = self
            .lock()
            .ledger
            .entries()
            .iter()
            .find(|e| e.info.mount_point == mount_point)
            .cloned()
            .ok_or_else(|| {
                Error::NotMounted(format!(
                    "no vault of the helper is mounted at {mount_point}"
                ))
            })?;
        let action = if entry.info.uid == caller.uid {
            actions::UNMOUNT
        } else {
            actions::UNMOUNT_OTHERS
        };
        self.authorize(&caller, action, !opts.no_user_interaction)
            .await?;

        let mut st = self.lock();
        if !st.ledger.entries().iter().any(|e| e.mnt_id == entry.mnt_id) {
            return Err(Error::NotMounted(format!(
                "{mount_point} was unmounted meanwhile"
            )));
        }
        match self.mounter.unmount(entry.mnt_id, opts.lazy) {
            Ok(()) | Err(MountError::Gone) => {}
            Err(MountError::Busy) => {
                let who = crate::holders::holders(std::path::Path::new(&mount_point), 8);
                let by = if who.is_empty() {
                    String::new()
                } else {
                    format!(": used by {}", who.join(", "))
                };
                return Err(Error::Busy(format!("{mount_point} is in use{by}")));
            }
            Err(e) => return Err(mount_error(e)),
        }
        st.ledger
            .retain(|e| e.mnt_id != entry.mnt_id)
            .map_err(|e| Error::Failed(e.to_string()))?;
        if !opts.keep_tokens {
            release_tokens(&mut st, &entry);
        }
        log::info!(
            "uid {} unmounted {} (mounted by uid {})",
            caller.uid,
            mount_point,
            entry.info.uid
        );
        Ok(())
    }

    async fn do_wipe(
        &self,
        sender: Option<UniqueName<'static>>,
        sigs: Vec<String>,
        options: HashMap<String, OwnedValue>,
    ) -> Result<u32, Error> {
        let caller = self.caller(sender).await?;
        let no_interaction = parse_plain_options(&options).map_err(invalid)?;
        if sigs.len() > MAX_WIPE || sigs.iter().any(|s| !is_sig(s)) {
            return Err(invalid(format!(
                "sigs must be at most {MAX_WIPE} sigs of 16 lower-case hex characters"
            )));
        }
        self.authorize(&caller, actions::WIPE_KEYS, !no_interaction)
            .await?;
        let mut st = self.lock();
        let in_use = sigs_in_use(&st.ledger, caller.uid);
        let targets: Vec<String> = if sigs.is_empty() {
            st.tokens
                .list(caller.uid)
                .into_iter()
                .map(|(s, _)| s)
                .filter(|s| !in_use.contains(s))
                .collect()
        } else {
            if let Some(busy) = sigs.iter().find(|s| in_use.contains(*s)) {
                return Err(Error::Busy(format!(
                    "token {busy} is used by a mounted vault"
                )));
            }
            sigs
        };
        let mut wiped = 0;
        for sig in targets {
            if st.release(caller.uid, &sig).map_err(store_error)? {
                wiped += 1;
            }
        }
        Ok(wiped)
    }
}

/// Every sig the options name must come with its token, and every token must be named.
fn check_token_coverage(opts: &MountOptions, tokens: &[Token]) -> Result<(), Error> {
    let given: Vec<&str> = tokens.iter().map(|t| t.sig.as_str()).collect();
    if given
        .iter()
        .enumerate()
        .any(|(i, s)| given[..i].contains(s))
    {
        return Err(invalid("a token is given twice"));
    }
    let named: Vec<&str> = opts
        .sigs
        .iter()
        .map(String::as_str)
        .chain(opts.fnek_sig.as_deref())
        .collect();
    if let Some(missing) = named.iter().find(|s| !given.contains(s)) {
        return Err(invalid(format!("no token given for sig {missing}")));
    }
    if let Some(extra) = given.iter().find(|s| !named.contains(s)) {
        return Err(invalid(format!(
            "token {extra} is not named by the options"
        )));
    }
    if let Some(t) = tokens
        .iter()
        .find(|t| Some(&t.sig) == opts.fnek_sig.as_ref() && t.kind == TOKEN_KIND_PRIVATE_KEY)
    {
        return Err(invalid(format!(
            "filename key {} must be a passphrase token",
            t.sig
        )));
    }
    Ok(())
}

fn sigs_in_use(ledger: &Ledger, uid: u32) -> HashSet<String> {
    ledger
        .entries()
        .iter()
        .filter(|e| e.info.uid == uid)
        .flat_map(|e| {
            e.info
                .sigs
                .iter()
                .cloned()
                .chain(Some(e.info.fnek_sig.clone()).filter(|s| !s.is_empty()))
        })
        .collect()
}

impl State {
    /// Drop `uid`'s hold on token `sig`, and its private key if it has one.
    fn release(&mut self, uid: u32, sig: &str) -> Result<bool, StoreError> {
        if let Ok(s) = sig.parse::<Sig>() {
            self.daemons.release(uid, &s);
        }
        self.tokens.release(uid, sig)
    }
}

/// The keyring token that tells the kernel to ask the daemon for `sig`. Its blob is
/// empty: the key stays in the helper's memory, never in a keyring.
fn private_key_token(sig: Sig) -> Result<Token, Error> {
    let token = AuthToken::private_key(sig, MODULE_ALIAS, Zeroizing::new(Vec::new()))
        .map_err(|e| Error::Failed(e.to_string()))?;
    Token::parse(token.to_bytes()).map_err(|e| Error::Failed(e.to_string()))
}

fn undo_tokens(st: &mut State, uid: u32, added: &[&str]) {
    for sig in added {
        if let Err(e) = st.release(uid, sig) {
            log::warn!("could not remove token {sig}: {e}");
        }
    }
}

/// After `entry` is gone: release its tokens that no other mount of the same uid uses.
fn release_tokens(st: &mut State, entry: &Entry) {
    let in_use = sigs_in_use(&st.ledger, entry.info.uid);
    let sigs = entry
        .info
        .sigs
        .iter()
        .chain(Some(&entry.info.fnek_sig).filter(|s| !s.is_empty()));
    for sig in sigs {
        if !in_use.contains(sig) {
            if let Err(e) = st.release(entry.info.uid, sig) {
                log::warn!("could not remove token {sig}: {e}");
            }
        }
    }
}

/// Passes on the outcome of a mount or unmount, telling subscribers of a change.
async fn announce<T>(emitter: &SignalEmitter<'_>, done: Result<T, Error>) -> Result<T, Error> {
    if done.is_ok() {
        // A subscriber that misses the signal still finds the change in ListMounts.
        let _ = Helper::mounts_changed(emitter).await;
    }
    done
}

fn sender_of(header: &Header<'_>) -> Option<UniqueName<'static>> {
    header.sender().map(|s| s.to_owned())
}

/// `io.github.strongroom.Helper1`.
#[zbus::interface(name = "io.github.strongroom.Helper1")]
impl Helper {
    /// Mount `lower` on `mount_point` (directory descriptors) with the given auth tokens.
    async fn mount(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
        lower: OwnedFd,
        mount_point: OwnedFd,
        tokens: Vec<Vec<u8>>,
        options: HashMap<String, OwnedValue>,
    ) -> Result<MountInfo, Error> {
        let done = self
            .do_mount(
                sender_of(&header),
                lower,
                mount_point,
                tokens,
                vec![],
                options,
            )
            .await;
        announce(&emitter, done).await
    }

    /// `Mount` for public-key (tag 1) vaults: `private_keys` are RSA private keys
    /// (unencrypted PKCS#1 DER) whose sigs the options name. The helper holds each in
    /// memory while a mount of the caller uses it and answers the kernel's
    /// /dev/ecryptfs requests with it for the caller's processes.
    #[allow(clippy::too_many_arguments)]
    async fn mount_with_keys(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
        lower: OwnedFd,
        mount_point: OwnedFd,
        tokens: Vec<Vec<u8>>,
        private_keys: Vec<Vec<u8>>,
        options: HashMap<String, OwnedValue>,
    ) -> Result<MountInfo, Error> {
        let done = self
            .do_mount(
                sender_of(&header),
                lower,
                mount_point,
                tokens,
                private_keys,
                options,
            )
            .await;
        announce(&emitter, done).await
    }

    /// Unmount a mount the helper made.
    async fn unmount(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
        mount_point: String,
        options: HashMap<String, OwnedValue>,
    ) -> Result<(), Error> {
        let done = self
            .do_unmount(sender_of(&header), mount_point, options)
            .await;
        announce(&emitter, done).await
    }

    /// The caller's mounts (all of them for root).
    async fn list_mounts(
        &self,
        #[zbus(header)] header: Header<'_>,
        options: HashMap<String, OwnedValue>,
    ) -> Result<Vec<MountInfo>, Error> {
        let caller = self.caller(sender_of(&header)).await?;
        parse_plain_options(&options).map_err(invalid)?;
        self.forget_vanished();
        let st = self.lock();
        Ok(st
            .ledger
            .entries()
            .iter()
            .filter(|e| caller.uid == 0 || e.info.uid == caller.uid)
            .map(|e| e.info.clone())
            .collect())
    }

    /// What the kernel offers.
    async fn kernel_support(
        &self,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<KernelSupport, Error> {
        self.caller(sender_of(&header)).await?;
        Ok(self.mounter.kernel_support())
    }

    /// The tokens the helper holds for the caller.
    async fn list_tokens(
        &self,
        #[zbus(header)] header: Header<'_>,
        options: HashMap<String, OwnedValue>,
    ) -> Result<Vec<TokenInfo>, Error> {
        let caller = self.caller(sender_of(&header)).await?;
        parse_plain_options(&options).map_err(invalid)?;
        let st = self.lock();
        let in_use = sigs_in_use(&st.ledger, caller.uid);
        Ok(st
            .tokens
            .list(caller.uid)
            .into_iter()
            .map(|(sig, kind)| TokenInfo {
                in_use: in_use.contains(&sig),
                sig,
                kind: kind.to_owned(),
            })
            .collect())
    }

    /// Wipe the caller's tokens (all unused ones when `sigs` is empty).
    async fn wipe_tokens(
        &self,
        #[zbus(header)] header: Header<'_>,
        sigs: Vec<String>,
        options: HashMap<String, OwnedValue>,
    ) -> Result<u32, Error> {
        self.do_wipe(sender_of(&header), sigs, options).await
    }

    /// Emitted after every mount or unmount.
    #[zbus(signal)]
    async fn mounts_changed(emitter: &SignalEmitter<'_>) -> zbus::Result<()>;
}
