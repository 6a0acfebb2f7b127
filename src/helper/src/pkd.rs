//! The `/dev/ecryptfs` daemon for public-key (tag 1) vaults, in the helper.
//!
//! The kernel cannot use an RSA key itself: for a private-key auth token it sends a tag
//! 64 ("unwrap this EFEK") or tag 66 ("wrap this FEK") request to the daemon registered
//! for the **effective uid of the process doing the file I/O** (`current_euid()` in
//! `ecryptfs_send_message`, compared with `daemon->file->f_cred->euid`), and waits up to
//! `ecryptfs_message_wait_timeout` (3 s) for the answer. So the helper runs one daemon
//! per vault owner: a thread that opens `/dev/ecryptfs` with that owner's euid (the open
//! records the credentials) and answers with the keys the owner's mounts brought.
//! Another user's processes get no answer from it (the kernel finds no daemon for
//! them), exactly as with ecryptfs-utils' per-user `ecryptfsd`.
//!
//! Every request gets an answer, failures included (`tag, 0xFF`): the kernel never waits
//! for the timeout because of a key the helper does not hold.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use strongroom_core::kdf::Sig;
use strongroom_core::pubkey::{RsaKeyPair, ALLOWED_BITS};
use zeroize::Zeroizing;

use crate::miscdev::{
    decrypt_reply, encrypt_reply, failure_reply, KernelRequest, Message, TAG_DECRYPT_REQUEST,
    TAG_ENCRYPT_REQUEST,
};

/// Largest private key accepted (DER of an RSA-4096 key is about 2.4 KiB).
pub const MAX_KEY_DER: usize = 4096;
/// A message from the kernel is at most ~540 bytes (tag 64 with a 512-byte EFEK).
const READ_BUF: usize = 4096;
/// Device errors in a row after which a daemon gives up (each is followed by a reopen).
const MAX_RESTARTS: u32 = 5;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PkdError {
    #[error("not an unencrypted RSA private key (PKCS#1 DER)")]
    BadKey,
    #[error("RSA key of {0} bits (offered: 1024, 2048, 3072, 4096)")]
    BadBits(u32),
    #[error("private key of {0} bytes (at most {MAX_KEY_DER})")]
    TooLarge(usize),
    #[error("cannot serve {path} for uid {uid}: {reason}")]
    Device {
        path: PathBuf,
        uid: u32,
        reason: String,
    },
}

/// Parse a caller's private key.
///
/// The contract takes the key **decrypted**, as PKCS#1 `RSAPrivateKey` DER, not the PEM
/// file and its passphrase: the helper (root) then runs no passphrase KDF a caller could
/// make arbitrarily expensive (PKCS#8 iteration counts), parses no PEM cipher list, opens
/// no file a caller names, and the PEM passphrase never leaves the user's session. The
/// caller had to decrypt the key anyway to prove it can. The key is checked
/// (`RSA_check_key`, size) before use.
pub fn parse_private_key(der: &[u8]) -> Result<RsaKeyPair, PkdError> {
    if der.len() > MAX_KEY_DER {
        return Err(PkdError::TooLarge(der.len()));
    }
    let pair = RsaKeyPair::from_private_der(der).map_err(|_| PkdError::BadKey)?;
    let bits = pair.public().bits();
    if !ALLOWED_BITS.contains(&bits) {
        return Err(PkdError::BadBits(bits));
    }
    Ok(pair)
}

/// Keys one daemon answers for. OpenSSL clears an RSA key's private numbers when the
/// last `Arc` goes (`RSA_free` uses `BN_clear_free`).
pub type KeyMap = Mutex<HashMap<Sig, Arc<RsaKeyPair>>>;

/// The answer (RESPONSE data) to the data of one REQUEST. Never fails: a request that
/// cannot be served gets the failure reply of its tag.
pub fn answer(data: &[u8], keys: &KeyMap) -> Zeroizing<Vec<u8>> {
    let fail = |why: &dyn std::fmt::Display| {
        log::warn!("/dev/ecryptfs request refused: {why}");
        let tag = match data.first() {
            Some(&t) if t == TAG_ENCRYPT_REQUEST => TAG_ENCRYPT_REQUEST,
            _ => TAG_DECRYPT_REQUEST,
        };
        Zeroizing::new(failure_reply(tag))
    };
    let request = match KernelRequest::parse(data) {
        Ok(r) => r,
        Err(e) => return fail(&e),
    };
    let sig = match &request {
        KernelRequest::Decrypt { sig, .. } | KernelRequest::Encrypt { sig, .. } => *sig,
    };
    let key = keys
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&sig)
        .cloned();
    let Some(key) = key else {
        return fail(&format_args!("no key with sig {sig} is held for this user"));
    };
    let reply = match &request {
        KernelRequest::Decrypt { efek, .. } => key
            .decrypt_payload(efek)
            .map_err(|e| e.to_string())
            .and_then(|p| decrypt_reply(&p).map_err(|e| e.to_string())),
        KernelRequest::Encrypt { payload, .. } => key
            .public()
            .encrypt_payload(payload)
            .map_err(|e| e.to_string())
            .and_then(|efek| encrypt_reply(&efek).map_err(|e| e.to_string()))
            .map(Zeroizing::new),
    };
    reply.unwrap_or_else(|e| fail(&format_args!("key {sig}: {e}")))
}

/// The two ends the loop talks through: the device (one message per read/write), or a
/// datagram socket standing in for it in tests.
pub trait Channel: AsFd {
    fn recv_msg(&self, buf: &mut [u8]) -> std::io::Result<usize>;
    fn send_msg(&self, buf: &[u8]) -> std::io::Result<usize>;
}

impl Channel for File {
    fn recv_msg(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        (&*self).read(buf)
    }
    fn send_msg(&self, buf: &[u8]) -> std::io::Result<usize> {
        (&*self).write(buf)
    }
}

impl Channel for UnixDatagram {
    fn recv_msg(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.recv(buf)
    }
    fn send_msg(&self, buf: &[u8]) -> std::io::Result<usize> {
        self.send(buf)
    }
}

/// Whether `fd` is readable (or hung up) within `timeout` (None: forever). EINTR counts
/// as "not yet".
fn poll_in(fds: &[&dyn AsFd], timeout: Option<Duration>) -> std::io::Result<Vec<bool>> {
    let mut pfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|f| libc::pollfd {
            fd: f.as_fd().as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let ms = timeout.map_or(-1, |t| t.as_millis().min(i32::MAX as u128) as libc::c_int);
    // SAFETY: pfds is a valid array of pollfd for its length; the fds are borrowed live.
    let r = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, ms) };
    if r < 0 {
        let e = std::io::Error::last_os_error();
        if e.kind() == std::io::ErrorKind::Interrupted {
            return Ok(vec![false; fds.len()]);
        }
        return Err(e);
    }
    Ok(pfds.iter().map(|p| p.revents != 0).collect())
}

/// Serve `dev` until `stop` becomes readable (its peer is dropped). Errors of the
/// channel itself end the loop; a reply the kernel refuses (it timed out) does not.
pub fn serve(dev: &dyn Channel, stop: &UnixStream, keys: &KeyMap) -> std::io::Result<()> {
    let mut buf = Zeroizing::new(vec![0u8; READ_BUF]);
    loop {
        let ready = poll_in(&[&stop.as_fd(), &dev.as_fd()], None)?;
        if ready[0] {
            return Ok(());
        }
        if !ready[1] {
            continue;
        }
        let n = match dev.recv_msg(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if n == 0 {
            // Another reader raced us or a signal: nothing was taken off the queue.
            continue;
        }
        let (seq, index, data) = match Message::decode(&buf[..n]) {
            // A tag 66 request carries a FEK in the clear.
            Ok(Message::Request { seq, index, data }) => (seq, index, Zeroizing::new(data)),
            Ok(other) => {
                log::debug!("/dev/ecryptfs: ignoring {other:?}");
                continue;
            }
            Err(e) => {
                // Without a sequence and index no answer can reach the waiter; the
                // kernel's timeout frees it. The kernel never sends such a message.
                log::warn!("/dev/ecryptfs: undecodable message: {e}");
                continue;
            }
        };
        let reply = Message::Response {
            seq,
            index,
            data: answer(&data, keys),
        };
        match reply.encode() {
            Ok(bytes) => {
                if let Err(e) = dev.send_msg(&bytes) {
                    // EINVAL: the request was no longer pending (timed out).
                    log::warn!("/dev/ecryptfs: reply to request {seq} refused: {e}");
                }
            }
            Err(e) => log::warn!("/dev/ecryptfs: cannot encode reply {seq}: {e}"),
        }
    }
}

/// Open `device` with effective uid `uid`, in the calling thread only.
///
/// The raw `setresuid`/`setfsuid` system calls change the calling thread's credentials
/// (glibc's wrappers would change every thread's). With the real and saved uids still 0,
/// `setfsuid(0)` is allowed and raises the file-system capabilities again, so the open
/// passes the device's root-only mode while `f_cred->euid` is `uid`. The thread keeps
/// euid = fsuid = `uid` afterwards: it parses kernel input with no capabilities.
fn open_as(device: &Path, uid: u32) -> std::io::Result<File> {
    const UNCHANGED: libc::c_long = -1;
    // SAFETY: plain system calls on integer arguments.
    unsafe {
        if libc::syscall(
            libc::SYS_setresuid,
            UNCHANGED,
            uid as libc::c_long,
            UNCHANGED,
        ) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
        libc::syscall(libc::SYS_setfsuid, 0 as libc::c_long);
    }
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(device);
    // SAFETY: as above.
    unsafe {
        libc::syscall(libc::SYS_setfsuid, uid as libc::c_long);
    }
    opened
}

/// The daemon thread of one uid.
struct UserDaemon {
    keys: Arc<KeyMap>,
    /// Dropping it stops the thread.
    stop: Option<UnixStream>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for UserDaemon {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn daemon_thread(
    device: PathBuf,
    uid: u32,
    keys: Arc<KeyMap>,
    stop: UnixStream,
    opened: mpsc::Sender<std::io::Result<()>>,
) {
    let mut dev = match open_as(&device, uid) {
        Ok(f) => {
            let _ = opened.send(Ok(()));
            f
        }
        Err(e) => {
            let _ = opened.send(Err(e));
            return;
        }
    };
    log::info!("serving {} for uid {uid}", device.display());
    let mut failures = 0;
    loop {
        match serve(&dev, &stop, &keys) {
            Ok(()) => break,
            Err(e) => {
                failures += 1;
                log::warn!("{} for uid {uid}: {e}", device.display());
                if failures > MAX_RESTARTS {
                    log::error!(
                        "{} for uid {uid}: giving up; public-key files of this user fail",
                        device.display()
                    );
                    return;
                }
                // Closing unregisters the daemon; a fresh open registers it again.
                drop(dev);
                std::thread::sleep(Duration::from_millis(200));
                dev = match open_as(&device, uid) {
                    Ok(f) => f,
                    Err(e) => {
                        log::error!("reopening {} for uid {uid}: {e}", device.display());
                        return;
                    }
                };
            }
        }
    }
    log::info!("stopped serving {} for uid {uid}", device.display());
}

/// The daemons the helper runs, by uid, and the keys each holds.
pub struct PkDaemons {
    device: PathBuf,
    users: HashMap<u32, UserDaemon>,
}

impl std::fmt::Debug for PkDaemons {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut uids: Vec<_> = self.users.keys().collect();
        uids.sort();
        write!(f, "PkDaemons({}, uids {uids:?})", self.device.display())
    }
}

impl PkDaemons {
    pub fn new(device: impl Into<PathBuf>) -> PkDaemons {
        PkDaemons {
            device: device.into(),
            users: HashMap::new(),
        }
    }

    /// Let `uid`'s daemon answer for `key`, starting the daemon when it is the first.
    pub fn add(&mut self, uid: u32, key: Arc<RsaKeyPair>) -> Result<(), PkdError> {
        if let Some(d) = self.users.get(&uid) {
            d.keys
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(key.sig(), key);
            return Ok(());
        }
        let keys = Arc::new(Mutex::new(HashMap::from([(key.sig(), key)])));
        let device_error = |reason: String| PkdError::Device {
            path: self.device.clone(),
            uid,
            reason,
        };
        let (stop, stop_rx) = UnixStream::pair().map_err(|e| device_error(e.to_string()))?;
        let (opened_tx, opened_rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name(format!("pkd-{uid}"))
            .spawn({
                let (device, keys) = (self.device.clone(), keys.clone());
                move || daemon_thread(device, uid, keys, stop_rx, opened_tx)
            })
            .map_err(|e| device_error(e.to_string()))?;
        let daemon = UserDaemon {
            keys,
            stop: Some(stop),
            thread: Some(thread),
        };
        match opened_rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(())) => {
                self.users.insert(uid, daemon);
                Ok(())
            }
            // EINVAL: another daemon (an ecryptfsd?) is registered for this uid.
            Ok(Err(e)) if e.raw_os_error() == Some(libc::EINVAL) => Err(device_error(
                "another daemon is registered for this user (is ecryptfsd running?)".into(),
            )),
            Ok(Err(e)) => Err(device_error(e.to_string())),
            Err(_) => Err(device_error("the daemon did not start".into())),
        }
    }

    /// Forget `uid`'s key `sig`; the daemon stops (and unregisters) with its last key.
    pub fn release(&mut self, uid: u32, sig: &Sig) {
        let Some(d) = self.users.get(&uid) else {
            return;
        };
        let empty = {
            let mut keys = d.keys.lock().unwrap_or_else(|p| p.into_inner());
            keys.remove(sig);
            keys.is_empty()
        };
        if empty {
            self.users.remove(&uid);
        }
    }

    /// Uids with a running daemon, sorted.
    pub fn uids(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self.users.keys().copied().collect();
        v.sort_unstable();
        v
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::rsa::Rsa;
    use strongroom_core::cipher::{Cipher, CipherSpec};
    use strongroom_core::extent::FileKey;
    use strongroom_core::kdf::Passphrase;
    use strongroom_core::keys::{fek_payload, parse_fek_payload};

    fn key_map(pair: &Arc<RsaKeyPair>) -> KeyMap {
        Mutex::new(HashMap::from([(pair.sig(), pair.clone())]))
    }

    fn request(tag: u8, sig: &str, field: &[u8]) -> Vec<u8> {
        let mut v = vec![tag, 16];
        v.extend_from_slice(sig.as_bytes());
        strongroom_core::packet::encode_len(field.len(), &mut v).unwrap();
        v.extend_from_slice(field);
        v
    }

    /// The kernel's parse_tag_65/67: tag, status 0, length, body.
    fn reply_body(reply: &[u8], tag: u8) -> &[u8] {
        assert_eq!(&reply[..2], [tag, 0], "status byte");
        let (len, used) = strongroom_core::packet::decode_len(&reply[2..]).unwrap();
        assert_eq!(reply.len(), 2 + used + len);
        &reply[2 + used..]
    }

    /// An ecryptfs-utils-format key (traditional PEM, AES-256-CBC) made by the openssl
    /// command line, a real peer tool; the helper gets its DER as a caller would send it.
    fn openssl_key(dir: &Path) -> (Vec<u8>, Arc<RsaKeyPair>) {
        let pem = dir.join("k.pem");
        let ok = std::process::Command::new("openssl")
            .args(["genrsa", "-traditional", "-aes256", "-passout", "pass:pw"])
            .arg("-out")
            .arg(&pem)
            .arg("2048")
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(ok.success());
        let der = std::process::Command::new("openssl")
            .args([
                "rsa",
                "-passin",
                "pass:pw",
                "-outform",
                "DER",
                "-traditional",
            ])
            .arg("-in")
            .arg(&pem)
            .stderr(std::process::Stdio::null())
            .output()
            .unwrap()
            .stdout;
        let pair = RsaKeyPair::load(&pem, &Passphrase::new("pw").unwrap()).unwrap();
        (der, Arc::new(pair))
    }

    #[test]
    fn unwraps_and_wraps_like_the_openssl_module() {
        let t = tempfile::tempdir().unwrap();
        let (der, from_pem) = openssl_key(t.path());
        let pair = Arc::new(parse_private_key(&der).unwrap());
        assert_eq!(pair.sig(), from_pem.sig(), "same key through both doors");
        let keys = key_map(&pair);
        let sig = pair.sig().to_hex();
        let fek = FileKey::generate(CipherSpec::new(Cipher::Aes, 32).unwrap()).unwrap();
        let payload = fek_payload(&fek);

        // Tag 66 → 67: the EFEK must open with the key from the PEM file (core).
        let reply = answer(&request(0x42, &sig, &payload), &keys);
        let efek = reply_body(&reply, 0x43);
        assert_eq!(efek.len(), 256);
        assert_eq!(
            from_pem.decrypt_payload(efek).unwrap().as_slice(),
            payload.as_slice()
        );
        // Tag 64 → 65 on an EFEK core wrapped.
        let efek = from_pem.public().encrypt_payload(&payload).unwrap();
        let reply = answer(&request(0x40, &sig, &efek), &keys);
        let (spec, key) = parse_fek_payload(reply_body(&reply, 0x41)).unwrap();
        assert_eq!((spec, key.as_slice()), (fek.spec(), fek.fek()));
    }

    #[test]
    fn refuses_what_it_cannot_serve_with_an_answer() {
        let t = tempfile::tempdir().unwrap();
        let (der, _) = openssl_key(t.path());
        let pair = Arc::new(parse_private_key(&der).unwrap());
        let keys = key_map(&pair);
        let sig = pair.sig().to_hex();
        // Unknown sig, for both directions.
        let efek = pair.public().encrypt_payload(&[7, 1, 0, 1]).unwrap();
        assert_eq!(
            answer(&request(0x40, "0123456789abcdef", &efek), &keys).as_slice(),
            [0x41, 0xff]
        );
        let payload = [7u8, 1, 2, 0, 3];
        assert_eq!(
            answer(&request(0x42, "0123456789abcdef", &payload), &keys).as_slice(),
            [0x43, 0xff]
        );
        // Damaged EFEK (OAEP fails), an EFEK whose content has a bad checksum.
        let mut bad = efek.clone();
        bad[10] ^= 1;
        assert_eq!(
            answer(&request(0x40, &sig, &bad), &keys).as_slice(),
            [0x41, 0xff]
        );
        let bad_sum = pair.public().encrypt_payload(&[7, 1, 0, 2]).unwrap();
        assert_eq!(
            answer(&request(0x40, &sig, &bad_sum), &keys).as_slice(),
            [0x41, 0xff]
        );
        // Garbage and unknown tags.
        assert_eq!(answer(&[], &keys).as_slice(), [0x41, 0xff]);
        assert_eq!(answer(&[0x42, 3], &keys).as_slice(), [0x43, 0xff]);
        assert_eq!(answer(&[0x99; 40], &keys).as_slice(), [0x41, 0xff]);
    }

    #[test]
    fn refuses_bad_keys() {
        assert!(matches!(
            parse_private_key(&[0x30, 3, 2, 1, 0]),
            Err(PkdError::BadKey)
        ));
        assert!(matches!(
            parse_private_key(&vec![0; MAX_KEY_DER + 1]),
            Err(PkdError::TooLarge(_))
        ));
        let small = Rsa::generate(512).unwrap().private_key_to_der().unwrap();
        assert!(matches!(
            parse_private_key(&small),
            Err(PkdError::BadBits(512))
        ));
        // A public key is not a private key.
        let public = Rsa::generate(1024)
            .unwrap()
            .public_key_to_der_pkcs1()
            .unwrap();
        assert!(matches!(parse_private_key(&public), Err(PkdError::BadKey)));
    }

    /// The kernel refuses writes over `MAX_MSG_PKT_SIZE` = type 1 + sequence 4 + length
    /// 2 + `struct ecryptfs_message` 8 + 4 + `ECRYPTFS_MAX_ENCRYPTED_KEY_BYTES` 512 = 531
    /// bytes (miscdev.c): the tag 67 answer for the largest key offered (RSA-4096, a
    /// 512-byte EFEK) must fit exactly.
    #[test]
    fn the_largest_reply_fits_the_kernels_write_limit() {
        let der = Rsa::generate(4096).unwrap().private_key_to_der().unwrap();
        let pair = Arc::new(parse_private_key(&der).unwrap());
        let keys = key_map(&pair);
        let fek = FileKey::generate(CipherSpec::new(Cipher::Aes, 32).unwrap()).unwrap();
        let data = answer(
            &request(0x42, &pair.sig().to_hex(), &fek_payload(&fek)),
            &keys,
        );
        assert_eq!(reply_body(&data, 0x43).len(), 512);
        let msg = Message::Response {
            seq: u32::MAX,
            index: 31,
            data,
        };
        assert_eq!(msg.encode().unwrap().len(), 531);
        // The failure answer is above the kernel's minimum for a response (5 + 1 + 8).
        let fail = Message::Response {
            seq: 1,
            index: 0,
            data: Zeroizing::new(failure_reply(0x40)),
        };
        assert!(fail.encode().unwrap().len() >= 14);
    }

    /// The loop over a datagram socket (message boundaries like the device): every
    /// request is answered with its sequence and index, unknown sig included, and the
    /// loop ends when told to.
    #[test]
    fn the_loop_answers_every_request_in_order() {
        let t = tempfile::tempdir().unwrap();
        let (der, from_pem) = openssl_key(t.path());
        let keys = Arc::new(key_map(&Arc::new(parse_private_key(&der).unwrap())));
        let (kernel, daemon) = UnixDatagram::pair().unwrap();
        let (stop, stop_rx) = UnixStream::pair().unwrap();
        let thread = std::thread::spawn({
            let keys = keys.clone();
            move || serve(&daemon, &stop_rx, &keys)
        });
        let sig = from_pem.sig().to_hex();
        let fek = FileKey::generate(CipherSpec::new(Cipher::Aes, 16).unwrap()).unwrap();
        let payload = fek_payload(&fek);
        let efek = from_pem.public().encrypt_payload(&payload).unwrap();
        let requests = [
            (request(0x40, &sig, &efek), 0x41),
            (request(0x40, "0123456789abcdef", &efek), 0x41),
            (Message::Helo { seq: 1 }.encode().unwrap().to_vec(), 0),
            (request(0x42, &sig, &payload), 0x43),
        ];
        for (i, (data, tag)) in requests.iter().enumerate() {
            let (seq, index) = (1000 + i as u32, i as u32 * 3);
            let msg = if *tag == 0 {
                data.clone()
            } else {
                Message::Request {
                    seq,
                    index,
                    data: data.clone(),
                }
                .encode()
                .unwrap()
                .to_vec()
            };
            kernel.send(&msg).unwrap();
            if *tag == 0 {
                continue; // HELO gets no answer
            }
            let mut buf = [0u8; 1024];
            let n = kernel.recv(&mut buf).unwrap();
            let Message::Response {
                seq: s,
                index: x,
                data,
            } = Message::decode(&buf[..n]).unwrap()
            else {
                panic!("not a response")
            };
            assert_eq!((s, x, data[0]), (seq, index, *tag));
            let status = data[1];
            assert_eq!(status == 0, i != 1, "only the unknown sig fails: {i}");
        }
        drop(stop);
        thread.join().unwrap().unwrap();
    }
}
