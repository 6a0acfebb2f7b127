//! TEMPORARY stand-in written by the KEYS helper: the `Cipher` names and key sizes of
//! the core-api.md contract, which options.rs validates against. The FORMAT helper's
//! cipher.rs (with the block ciphers themselves) replaces this file at merge.

/// Errors of cipher selection.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum CipherError {
    #[error("unknown cipher {0:?}")]
    UnknownCipher(String),
}

/// The content/filename ciphers of eCryptfs, by kernel crypto name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Cipher {
    Aes,
    Blowfish,
    Des3Ede,
    Cast5,
    Cast6,
    Twofish,
}

impl Cipher {
    pub const ALL: [Cipher; 6] = [
        Cipher::Aes,
        Cipher::Blowfish,
        Cipher::Des3Ede,
        Cipher::Cast5,
        Cipher::Cast6,
        Cipher::Twofish,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Cipher::Aes => "aes",
            Cipher::Blowfish => "blowfish",
            Cipher::Des3Ede => "des3_ede",
            Cipher::Cast5 => "cast5",
            Cipher::Cast6 => "cast6",
            Cipher::Twofish => "twofish",
        }
    }

    pub fn from_name(s: &str) -> Result<Cipher, CipherError> {
        Cipher::ALL
            .into_iter()
            .find(|c| c.name() == s)
            .ok_or_else(|| CipherError::UnknownCipher(s.to_owned()))
    }

    pub fn key_sizes(self) -> &'static [usize] {
        match self {
            Cipher::Aes => &[16, 24, 32],
            Cipher::Blowfish => &[16, 32, 56],
            Cipher::Des3Ede => &[24],
            Cipher::Cast5 => &[16],
            Cipher::Cast6 | Cipher::Twofish => &[16, 32],
        }
    }
}
