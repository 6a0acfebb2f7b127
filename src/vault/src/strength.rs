//! Passphrase length and strength feedback.
//!
//! eCryptfs stretches a passphrase with 65536 SHA-512 rounds only, which a GPU runs
//! millions of times a second, so the passphrase itself must carry the strength. The
//! estimate is deliberately simple (character pool × effective length, with penalties
//! for runs, sequences and well-known words) and shown as advice, never enforced.

use serde::Serialize;
use strongroom_core::kdf::{Passphrase, MAX_PASSPHRASE_BYTES};

/// Coarse verdict shown next to the entry field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    VeryWeak,
    Weak,
    Fair,
    Strong,
    VeryStrong,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Strength {
    pub verdict: Verdict,
    /// Rough entropy estimate.
    pub bits: u32,
    pub length: usize,
    /// Short, translatable advice lines.
    pub hints: Vec<&'static str>,
}

const COMMON: &[&str] = &[
    "password", "passwort", "123456", "qwerty", "azerty", "letmein", "secret", "iloveyou", "admin",
    "welcome", "monkey", "dragon", "ecryptfs", "private", "changeme", "abc123",
];

/// Judges a passphrase.
pub fn assess(p: &Passphrase) -> Strength {
    let b = p.as_bytes();
    let mut hints = Vec::new();
    let (mut lower, mut upper, mut digit, mut other, mut high) =
        (false, false, false, false, false);
    for &c in b {
        match c {
            b'a'..=b'z' => lower = true,
            b'A'..=b'Z' => upper = true,
            b'0'..=b'9' => digit = true,
            0x80.. => high = true,
            _ => other = true,
        }
    }
    let pool: u32 = [
        (lower, 26),
        (upper, 26),
        (digit, 10),
        (other, 33),
        (high, 64),
    ]
    .iter()
    .filter(|(on, _)| *on)
    .map(|(_, n)| n)
    .sum();
    // Characters that repeat or continue a sequence (aaa, abc, 321) add little.
    let mut effective = 0.0f64;
    for (i, &c) in b.iter().enumerate() {
        let predictable = i > 0 && {
            let d = c as i16 - b[i - 1] as i16;
            d.abs() <= 1
        };
        effective += if predictable { 0.25 } else { 1.0 };
    }
    let mut bits = (effective * f64::from(pool.max(1)).log2()).round() as u32;
    let lowered = String::from_utf8_lossy(b).to_lowercase();
    if COMMON.iter().any(|w| lowered.contains(w)) {
        bits = bits.saturating_sub(20);
        hints.push("contains a very common word or sequence");
    }
    if b.len() < 12 {
        hints.push("use at least 12 characters; several unrelated words work well");
    }
    if pool <= 26 && b.len() < 20 {
        hints.push("mix in capitals, digits or symbols, or make it longer");
    }
    if b.len() == MAX_PASSPHRASE_BYTES {
        hints.push("eCryptfs uses at most 64 bytes; this passphrase is at the limit");
    }
    let verdict = match bits {
        0..=27 => Verdict::VeryWeak,
        28..=40 => Verdict::Weak,
        41..=59 => Verdict::Fair,
        60..=79 => Verdict::Strong,
        _ => Verdict::VeryStrong,
    };
    Strength {
        verdict,
        bits,
        length: b.len(),
        hints,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Strength {
        assess(&Passphrase::new(s).unwrap())
    }

    #[test]
    fn ordering_matches_intuition() {
        assert_eq!(v("password1").verdict, Verdict::VeryWeak);
        assert_eq!(v("aaaaaaaaaaaa").verdict, Verdict::VeryWeak);
        assert!(v("abcdefgh").verdict <= Verdict::Weak);
        assert!(v("Tr0ub4dor&3").verdict >= Verdict::Fair);
        assert!(v("correct horse battery staple").verdict >= Verdict::Strong);
        assert!(v("correct horse battery staple").bits > v("Tr0ub4dor&3").bits);
        assert!(v("short").hints.iter().any(|h| h.contains("12 characters")));
        assert!(v(&"Ab1!".repeat(16))
            .hints
            .iter()
            .any(|h| h.contains("64 bytes")));
    }
}
