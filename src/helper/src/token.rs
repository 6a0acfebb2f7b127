//! A caller's auth token, validated by `strongroom_core::token` (version, type, the
//! SKEK-set flag, the sig matching the key) before it can reach the kernel. What goes
//! into the keyring is the canonical re-encoding, never the caller's raw bytes.

use std::fmt;

use strongroom_core::token::{AuthToken, TokenError};
use zeroize::Zeroizing;

use strongroom_dbus::options::MAX_TOKEN_BYTES;
use strongroom_dbus::types::{TOKEN_KIND_PASSPHRASE, TOKEN_KIND_PRIVATE_KEY};

/// A validated token: its sig and kind, and the payload (zeroized on drop).
pub struct Token {
    pub sig: String,
    pub kind: &'static str,
    pub payload: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("sig", &self.sig)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

/// Why a token was refused (never echoes payload bytes).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BadToken {
    #[error("token of {0} bytes (at most {MAX_TOKEN_BYTES})")]
    TooLarge(usize),
    #[error(transparent)]
    Invalid(#[from] TokenError),
}

impl Token {
    /// Validate a token as the caller sent it.
    pub fn parse(raw: Zeroizing<Vec<u8>>) -> Result<Token, BadToken> {
        if raw.len() > MAX_TOKEN_BYTES {
            return Err(BadToken::TooLarge(raw.len()));
        }
        let token = AuthToken::from_bytes(&raw)?;
        let kind = match token {
            AuthToken::PrivateKey(_) => TOKEN_KIND_PRIVATE_KEY,
            _ => TOKEN_KIND_PASSPHRASE,
        };
        Ok(Token {
            sig: token.sig().to_hex(),
            kind,
            payload: token.to_bytes(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strongroom_core::kdf::{Passphrase, DEFAULT_SALT};

    fn parse(v: Vec<u8>) -> Result<Token, BadToken> {
        Token::parse(Zeroizing::new(v))
    }

    #[test]
    fn accepts_the_tools_token_and_refuses_bad_ones() {
        let good = AuthToken::from_passphrase(&Passphrase::new("test123").unwrap(), &DEFAULT_SALT)
            .to_bytes();
        let t = parse(good.to_vec()).unwrap();
        // spec §9 V1: ecryptfs-add-passphrase's sig for "test123".
        assert_eq!(
            (t.sig.as_str(), t.kind),
            ("2a97418edca01eb9", TOKEN_KIND_PASSPHRASE)
        );
        assert_eq!(t.payload.as_slice(), good.as_slice());
        assert!(!format!("{t:?}").contains("648e"), "Debug shows no payload");
        assert_eq!(
            parse(vec![4; 1 << 20]).unwrap_err(),
            BadToken::TooLarge(1 << 20)
        );
        assert!(matches!(parse(vec![0; 10]), Err(BadToken::Invalid(_))));
        let mut forged = good.to_vec();
        forged[712] = b'f'; // a sig that is not the key's
        assert!(matches!(
            parse(forged),
            Err(BadToken::Invalid(TokenError::SigMismatch { .. }))
        ));
        let mut no_skek = good.to_vec();
        no_skek[644] = 0;
        assert!(matches!(
            parse(no_skek),
            Err(BadToken::Invalid(TokenError::NoSkek { .. }))
        ));
    }
}
