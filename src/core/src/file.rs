//! Whole-file encryption and decryption over `std::io`, one extent at a time (for
//! `strongroomctl encrypt/decrypt` and tests), and the constructors FUSE uses to
//! create files (spec §4.5, §4.6).

use std::io::{self, Read, Seek, SeekFrom, Write};

use zeroize::Zeroizing;

use crate::cipher::CipherSpec;
use crate::extent::{ExtentError, FileKey, EXTENT_SIZE};
use crate::header::{Header, HeaderError, HEADER_READ_SIZE};
use crate::keys::{unwrap_fek, wrap_fek, KeyError, KeyLookup, WrappingKey};

/// Extents encrypted per batch by [`encrypt_file`].
const ENCRYPT_BATCH: usize = 8;

/// Errors of whole-file operations. The caller adds the file name.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FileError {
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error(transparent)]
    Header(#[from] HeaderError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Extent(#[from] ExtentError),
    /// The header promises more data than the lower file holds.
    #[error("encrypted data ends early: extent {extent} is missing or incomplete")]
    DataTruncated { extent: u64 },
}

/// `Read + Seek`, as a trait object.
pub trait ReadSeek: Read + Seek {}
impl<T: Read + Seek + ?Sized> ReadSeek for T {}
/// `Write + Seek`, as a trait object.
pub trait WriteSeek: Write + Seek {}
impl<T: Write + Seek + ?Sized> WriteSeek for T {}

/// How new files are written: what a mount's options decide.
#[derive(Debug, Clone)]
pub struct WriteContext {
    /// Contents cipher and FEK size (`ecryptfs_cipher`, `ecryptfs_key_bytes`).
    pub spec: CipherSpec,
    /// One packet per key, in mount-option order (`ecryptfs_sig=`, FNEK excluded).
    pub keys: Vec<WrappingKey>,
    /// Header in the `user.ecryptfs` xattr (`ecryptfs_xattr_metadata`).
    pub xattr: bool,
    /// Filename encryption on: sets header flag 0x08.
    pub fnek: bool,
}

impl WriteContext {
    /// A new file's random key and its (empty-file) header.
    pub fn new_file(&self) -> Result<(FileKey, Header), FileError> {
        let key = FileKey::generate(self.spec)?;
        let header = Header::new_for(self, &key)?;
        Ok((key, header))
    }
}

impl Header {
    /// The header of a new, empty file whose FEK is `key`, wrapped with every key of `ctx`.
    pub fn new_for(ctx: &WriteContext, key: &FileKey) -> Result<Header, KeyError> {
        Ok(Header::new(wrap_fek(key, &ctx.keys)?, ctx.xattr, ctx.fnek))
    }
}

/// Reads until `buf` is full or EOF; returns the byte count.
fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// The header of a lower file: from its first bytes, else from its xattr value, as
/// the kernel tries them (spec §1.2). A broken file header wins over a missing xattr.
pub fn read_header(lower_first_4096: &[u8], xattr: Option<&[u8]>) -> Result<Header, FileError> {
    match (Header::parse(lower_first_4096), xattr) {
        (Ok(h), _) => Ok(h),
        (Err(e), None) => Err(e.into()),
        (Err(e), Some(x)) => Header::parse(x).map_err(|xe| {
            if e == HeaderError::NotEcryptfs {
                xe.into()
            } else {
                e.into()
            }
        }),
    }
}

/// Encrypts `plain` into `lower` (written from its start): header, then extents,
/// then the size field, as the kernel does. Returns the `user.ecryptfs` value in
/// xattr mode (the caller sets it), else `None`.
pub fn encrypt_file(
    ctx: &WriteContext,
    plain: &mut dyn Read,
    lower: &mut dyn WriteSeek,
) -> Result<Option<Vec<u8>>, FileError> {
    let (key, mut header) = ctx.new_file()?;
    lower.seek(SeekFrom::Start(0))?;
    if !ctx.xattr {
        lower.write_all(&header.to_file_bytes()?)?;
    }
    // Several extents per round so their CBC chains run side by side.
    let mut buf = Zeroizing::new(vec![0u8; ENCRYPT_BATCH * EXTENT_SIZE]);
    let mut index = 0u64;
    loop {
        let n = read_full(plain, &mut buf)?;
        let whole = n.div_ceil(EXTENT_SIZE) * EXTENT_SIZE;
        buf[n..whole].fill(0);
        key.encrypt_extents(index, &mut buf[..whole]);
        lower.write_all(&buf[..whole])?;
        header.size += n as u64;
        index += (whole / EXTENT_SIZE) as u64;
        if n < buf.len() {
            break;
        }
    }
    lower.flush()?;
    if ctx.xattr {
        return Ok(Some(header.to_xattr_bytes()?));
    }
    lower.seek(SeekFrom::Start(0))?;
    lower.write_all(&header.size.to_be_bytes())?;
    lower.seek(SeekFrom::End(0))?;
    lower.flush()?;
    Ok(None)
}

/// Decrypts a lower file into `out`; returns the plaintext size. `xattr` is the
/// lower file's `user.ecryptfs` value, if it has one.
pub fn decrypt_file(
    lower: &mut dyn ReadSeek,
    xattr: Option<&[u8]>,
    keys: &dyn KeyLookup,
    out: &mut dyn Write,
) -> Result<u64, FileError> {
    let mut first = vec![0u8; HEADER_READ_SIZE];
    lower.seek(SeekFrom::Start(0))?;
    let n = read_full(lower, &mut first)?;
    let header = read_header(&first[..n], xattr)?;
    let key = unwrap_fek(&header.packets, keys)?;
    lower.seek(SeekFrom::Start(header.lower_data_offset()))?;
    let mut buf = Zeroizing::new(vec![0u8; EXTENT_SIZE]);
    let mut remaining = header.size;
    let mut index = 0u64;
    while remaining > 0 {
        if read_full(lower, &mut buf)? < EXTENT_SIZE {
            return Err(FileError::DataTruncated { extent: index });
        }
        key.decrypt_extent(index, &mut buf);
        let take = remaining.min(EXTENT_SIZE as u64) as usize;
        out.write_all(&buf[..take])?;
        remaining -= take as u64;
        index += 1;
    }
    out.flush()?;
    Ok(header.size)
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;
    use crate::cipher::Cipher;
    use crate::header::lower_size_for;
    use crate::kdf::{derive_skek, Passphrase, DEFAULT_SALT};
    use crate::keys::KeySet;

    fn ctx(c: Cipher, n: usize, xattr: bool) -> (WriteContext, KeySet) {
        let skek = derive_skek(&Passphrase::new("file test").unwrap(), &DEFAULT_SALT);
        let mut ks = KeySet::new();
        ks.add_passphrase(skek.clone());
        let keys = vec![WrappingKey::Passphrase {
            skek,
            salt: DEFAULT_SALT,
        }];
        let ctx = WriteContext {
            spec: CipherSpec::new(c, n).unwrap(),
            keys,
            xattr,
            fnek: true,
        };
        (ctx, ks)
    }

    /// A reader that hands out at most 1000 bytes per call, like a pipe.
    struct Trickle<'a>(&'a [u8]);
    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(self.0.len()).min(1000);
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn roundtrip_sizes_and_layout() {
        let (ctx, ks) = ctx(Cipher::Aes, 16, false);
        let sizes = [
            0usize,
            1,
            4095,
            4096,
            4097,
            3 * 4096 + 5,
            8 * 4096,
            8 * 4096 + 1,
            83_000,
        ];
        for size in sizes {
            let plain: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
            let mut lower = Cursor::new(Vec::new());
            let written = encrypt_file(&ctx, &mut Trickle(&plain[..]), &mut lower).unwrap();
            assert!(written.is_none());
            let bytes = lower.into_inner();
            assert_eq!(bytes.len() as u64, lower_size_for(size as u64, 8192));
            let h = Header::parse(&bytes[..4096]).unwrap();
            assert_eq!((h.size, h.flags, h.version), (size as u64, 0x0a, 3));
            let mut out = Vec::new();
            let n = decrypt_file(&mut Cursor::new(&bytes), None, &ks, &mut out).unwrap();
            assert_eq!((n, out), (size as u64, plain));
        }
    }

    #[test]
    fn xattr_mode_and_truncation() {
        let (ctx, ks) = ctx(Cipher::Blowfish, 56, true);
        let plain = vec![7u8; 5000];
        let mut lower = Cursor::new(Vec::new());
        let x = encrypt_file(&ctx, &mut &plain[..], &mut lower)
            .unwrap()
            .unwrap();
        let bytes = lower.into_inner();
        assert_eq!(bytes.len(), 8192);
        assert_eq!(x[16..20], [3, 0, 0, 0x0e]);
        let mut out = Vec::new();
        decrypt_file(&mut Cursor::new(&bytes), Some(&x), &ks, &mut out).unwrap();
        assert_eq!(out, plain);
        assert!(matches!(
            decrypt_file(&mut Cursor::new(&bytes), None, &ks, &mut Vec::new()),
            Err(FileError::Header(HeaderError::NotEcryptfs))
        ));
        assert!(matches!(
            decrypt_file(
                &mut Cursor::new(&bytes[..4096]),
                Some(&x),
                &ks,
                &mut Vec::new()
            ),
            Err(FileError::DataTruncated { extent: 1 })
        ));
    }
}
