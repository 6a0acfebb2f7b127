//! Just enough of `struct ecryptfs_auth_tok` (spec §3.3) to refuse malformed tokens
//! before they reach the kernel and to learn their sig and kind. The payload itself is
//! only ever handed to the keyring.
// TODO(merge wip-keys): replace with core::token::AuthToken::from_bytes once it lands.

use zeroize::Zeroizing;

use strongroom_dbus::options::{is_sig, MAX_TOKEN_BYTES};
use strongroom_dbus::types::{TOKEN_KIND_PASSPHRASE, TOKEN_KIND_PRIVATE_KEY};

/// Size of a passphrase token and of the fixed part of a private-key token.
pub const TOKEN_BYTES: usize = 740;
const VERSION: [u8; 2] = [0x04, 0x00];
const SKEK_SET: u32 = 0x02;

/// A validated token: its sig and kind, and the payload (zeroized on drop).
pub struct Token {
    pub sig: String,
    pub kind: &'static str,
    pub payload: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("sig", &self.sig)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

/// Why a token was refused (never echoes payload bytes).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    #[error("token of {0} bytes: passphrase tokens have 740, private-key tokens at most {MAX_TOKEN_BYTES}")]
    Size(usize),
    #[error("token version is not 0.4")]
    Version,
    #[error("unknown token type {0}")]
    Type(u16),
    #[error("token has no session key encryption key set")]
    NoSkek,
    #[error("token signature is not 16 lower-case hex characters and a NUL")]
    Sig,
    #[error("private-key token has a bad module alias or blob length")]
    PrivateKey,
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

fn sig_at(b: &[u8], off: usize) -> Result<String, TokenError> {
    let field = &b[off..off + 17];
    let text = std::str::from_utf8(&field[..16]).map_err(|_| TokenError::Sig)?;
    if field[16] != 0 || !is_sig(text) {
        return Err(TokenError::Sig);
    }
    Ok(text.to_owned())
}

impl Token {
    /// Validate a token as the caller sent it; the bytes are moved into zeroizing storage.
    pub fn parse(payload: Zeroizing<Vec<u8>>) -> Result<Token, TokenError> {
        let b = payload.as_slice();
        if b.len() < TOKEN_BYTES || b.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::Size(b.len()));
        }
        if b[0..2] != VERSION {
            return Err(TokenError::Version);
        }
        let token_type = u16::from_le_bytes([b[2], b[3]]);
        let (sig, kind) = match token_type {
            0 => {
                if b.len() != TOKEN_BYTES {
                    return Err(TokenError::Size(b.len()));
                }
                // §10.16: without SKEK_SET the kernel wraps with uninitialised memory.
                if u32_at(b, 644) & SKEK_SET == 0 || u32_at(b, 640) != 64 {
                    return Err(TokenError::NoSkek);
                }
                (sig_at(b, 712)?, TOKEN_KIND_PASSPHRASE)
            }
            1 => {
                let data_len = u32_at(b, 632) as usize;
                if TOKEN_BYTES.checked_add(data_len) != Some(b.len()) {
                    return Err(TokenError::PrivateKey);
                }
                let alias = &b[653..670];
                let end = alias
                    .iter()
                    .position(|&c| c == 0)
                    .ok_or(TokenError::PrivateKey)?;
                if end == 0
                    || !alias[..end]
                        .iter()
                        .all(|c| c.is_ascii_alphanumeric() || *c == b'_')
                {
                    return Err(TokenError::PrivateKey);
                }
                (sig_at(b, 636)?, TOKEN_KIND_PRIVATE_KEY)
            }
            other => return Err(TokenError::Type(other)),
        };
        Ok(Token { sig, kind, payload })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// SKEK of "test123" with the default salt (spec §9 V3).
    const V3_SKEK: &str = "648eecb6ebfeab9555c92628b892a2b215b85b619bc7cd53dd4b9415c0a7f861\
                           81087fa8258d9d9adaa78ae648429fe379db612ccd610bf9834bf644ae60d3f6";

    /// The token `ecryptfs-add-passphrase` made for "test123" (spec §9 V3).
    pub fn v3_token() -> Vec<u8> {
        let skek: [u8; 64] = hex::decode(V3_SKEK.replace(' ', ""))
            .unwrap()
            .try_into()
            .unwrap();
        passphrase_token("2a97418edca01eb9", skek)
    }

    #[test]
    fn fixture_is_the_tools_token() {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(v3_token());
        assert_eq!(
            hex::encode(digest),
            "6d8162929de65fa480709c22acadd891f1ff8daaad2e096c93d47b5e872b1ff8"
        );
    }

    pub fn parse(v: Vec<u8>) -> Result<Token, TokenError> {
        Token::parse(Zeroizing::new(v))
    }

    pub fn passphrase_token(sig: &str, skek: [u8; 64]) -> Vec<u8> {
        let mut t = vec![0u8; TOKEN_BYTES];
        t[0..2].copy_from_slice(&VERSION);
        t[632..636].copy_from_slice(&10u32.to_le_bytes());
        t[640..644].copy_from_slice(&64u32.to_le_bytes());
        t[644..648].copy_from_slice(&SKEK_SET.to_le_bytes());
        t[648..712].copy_from_slice(&skek);
        t[712..728].copy_from_slice(sig.as_bytes());
        t[729..737].copy_from_slice(&[0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77]);
        t
    }

    #[test]
    fn accepts_a_passphrase_token() {
        let t = parse(v3_token()).unwrap();
        assert_eq!(
            (t.sig.as_str(), t.kind),
            ("2a97418edca01eb9", TOKEN_KIND_PASSPHRASE)
        );
        assert!(!format!("{t:?}").contains("648e"), "Debug shows no payload");
    }

    #[test]
    fn refuses_malformed_tokens() {
        let mut t = v3_token();
        t.push(0);
        assert_eq!(parse(t).unwrap_err(), TokenError::Size(741));
        assert_eq!(parse(vec![0; 10]).unwrap_err(), TokenError::Size(10));
        assert_eq!(
            parse(vec![0; 1 << 20]).unwrap_err(),
            TokenError::Size(1 << 20)
        );
        let mut t = v3_token();
        t[0] = 3;
        assert_eq!(parse(t).unwrap_err(), TokenError::Version);
        let mut t = v3_token();
        t[2] = 7;
        assert_eq!(parse(t).unwrap_err(), TokenError::Type(7));
        let mut t = v3_token();
        t[644] = 0;
        assert_eq!(parse(t).unwrap_err(), TokenError::NoSkek);
        for bad_sig in ["D395309AAAD4DE06", "d395309aaad4de0,", "../../etc/passw"] {
            let mut t = v3_token();
            t[712..712 + bad_sig.len()].copy_from_slice(bad_sig.as_bytes());
            assert_eq!(parse(t).unwrap_err(), TokenError::Sig, "{bad_sig}");
        }
        let mut t = v3_token();
        t[728] = b'x';
        assert_eq!(parse(t).unwrap_err(), TokenError::Sig);
    }

    #[test]
    fn private_key_tokens_carry_their_blob() {
        let blob = b"\x05\x00/k.pem\x00\x02\x00p\x00";
        let mut t = vec![0u8; TOKEN_BYTES];
        t[0..2].copy_from_slice(&VERSION);
        t[2] = 1;
        t[628..632].copy_from_slice(&16u32.to_le_bytes());
        t[632..636].copy_from_slice(&(blob.len() as u32).to_le_bytes());
        t[636..652].copy_from_slice(b"0123456789abcdef");
        t[653..660].copy_from_slice(b"openssl");
        t.extend_from_slice(blob);
        let ok = parse(t.clone()).unwrap();
        assert_eq!(
            (ok.sig.as_str(), ok.kind),
            ("0123456789abcdef", TOKEN_KIND_PRIVATE_KEY)
        );
        let mut short = t.clone();
        short.pop();
        assert_eq!(parse(short).unwrap_err(), TokenError::PrivateKey);
        let mut alias = t;
        alias[653] = b',';
        assert_eq!(parse(alias).unwrap_err(), TokenError::PrivateKey);
    }
}
