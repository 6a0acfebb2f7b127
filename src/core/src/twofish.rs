//! Twofish with "full keying" (Schneier et al., "Twofish: A 128-Bit Block Cipher",
//! §4.3 and §7.3): the key-dependent S-boxes followed by the MDS matrix are folded
//! into four 256-entry `u32` tables once per key, so each round's `g` is four table
//! lookups. The `twofish` crate recomputes them for every block, 50-100x slower.
//!
//! Not constant-time: the table index depends on secret data, so cache timing can
//! leak key material to a co-located attacker. The kernel's generic C Twofish (the
//! one eCryptfs uses without AVX) and most software Twofish share this property.

use cipher::consts::{U16, U32};
use cipher::{AlgorithmName, BlockCipher, InvalidLength, Key, KeyInit, KeySizeUser};
use std::fmt;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// The 4-bit permutations t0..t3 that build q0 and q1 (paper §4.3.5).
const Q_NIBBLES: [[[u8; 16]; 4]; 2] = [
    [
        [
            0x8, 0x1, 0x7, 0xD, 0x6, 0xF, 0x3, 0x2, 0x0, 0xB, 0x5, 0x9, 0xE, 0xC, 0xA, 0x4,
        ],
        [
            0xE, 0xC, 0xB, 0x8, 0x1, 0x2, 0x3, 0x5, 0xF, 0x4, 0xA, 0x6, 0x7, 0x0, 0x9, 0xD,
        ],
        [
            0xB, 0xA, 0x5, 0xE, 0x6, 0xD, 0x9, 0x0, 0xC, 0x8, 0xF, 0x3, 0x2, 0x4, 0x7, 0x1,
        ],
        [
            0xD, 0x7, 0xF, 0x4, 0x1, 0x2, 0x6, 0xE, 0x9, 0xB, 0x3, 0x0, 0x8, 0x5, 0xC, 0xA,
        ],
    ],
    [
        [
            0x2, 0x8, 0xB, 0xD, 0xF, 0x7, 0x6, 0xE, 0x3, 0x1, 0x9, 0x4, 0x0, 0xA, 0xC, 0x5,
        ],
        [
            0x1, 0xE, 0x2, 0xB, 0x4, 0xC, 0x3, 0x7, 0x6, 0xD, 0xA, 0x5, 0xF, 0x9, 0x0, 0x8,
        ],
        [
            0x4, 0xC, 0x7, 0x5, 0x1, 0x6, 0x9, 0xA, 0x0, 0xE, 0xD, 0x8, 0x2, 0xB, 0x3, 0xF,
        ],
        [
            0xB, 0x9, 0x5, 0x1, 0xC, 0x3, 0xD, 0xE, 0x6, 0x4, 0x7, 0xF, 0x2, 0x0, 0x8, 0xA,
        ],
    ],
];

/// q0 or q1 as a whole 256-byte permutation, computed at compile time from the nibble
/// permutations (two Feistel-like mixing steps, paper §4.3.5).
const fn q_table(which: usize) -> [u8; 256] {
    let t = &Q_NIBBLES[which];
    let mut out = [0u8; 256];
    let mut x = 0;
    while x < 256 {
        let (a0, b0) = ((x >> 4) as u8, (x & 15) as u8);
        let a1 = a0 ^ b0;
        let b1 = (a0 ^ ((b0 >> 1) | (b0 << 3)) ^ (a0 << 3)) & 15;
        let (a2, b2) = (t[0][a1 as usize], t[1][b1 as usize]);
        let a3 = a2 ^ b2;
        let b3 = (a2 ^ ((b2 >> 1) | (b2 << 3)) ^ (a2 << 3)) & 15;
        let (a4, b4) = (t[2][a3 as usize], t[3][b3 as usize]);
        out[x] = (b4 << 4) | a4;
        x += 1;
    }
    out
}

const Q: [[u8; 256]; 2] = [q_table(0), q_table(1)];

/// Which q each byte lane goes through at each stage of h, outermost key stage first
/// (the 256-bit key's stage) down to the final q before the MDS (paper Figure 2).
const Q_ORDER: [[usize; 5]; 4] = [
    [1, 1, 0, 0, 1],
    [0, 1, 1, 0, 0],
    [0, 0, 0, 1, 1],
    [1, 0, 1, 1, 0],
];

/// GF(2^8) product modulo `poly` (the low 8 bits of the degree-8 polynomial).
const fn gf_mul(mut a: u8, mut b: u8, poly: u8) -> u8 {
    let mut r = 0;
    while a != 0 {
        if a & 1 != 0 {
            r ^= b;
        }
        a >>= 1;
        b = if b & 0x80 != 0 {
            (b << 1) ^ poly
        } else {
            b << 1
        };
    }
    r
}

/// x^8 + x^6 + x^5 + x^3 + 1 (MDS) and x^8 + x^6 + x^3 + x^2 + 1 (RS).
const MDS_POLY: u8 = 0x69;
const RS_POLY: u8 = 0x4d;

const MDS: [[u8; 4]; 4] = [
    [0x01, 0xEF, 0x5B, 0x5B],
    [0x5B, 0xEF, 0xEF, 0x01],
    [0xEF, 0x5B, 0x01, 0xEF],
    [0xEF, 0x01, 0xEF, 0x5B],
];

const RS: [[u8; 8]; 4] = [
    [0x01, 0xA4, 0x55, 0x87, 0x5A, 0x58, 0xDB, 0x9E],
    [0xA4, 0x56, 0x82, 0xF3, 0x1E, 0xC6, 0x68, 0xE5],
    [0x02, 0xA1, 0xFC, 0xC1, 0x47, 0xAE, 0x3D, 0x19],
    [0xA4, 0x55, 0x87, 0x5A, 0x58, 0xDB, 0x9E, 0x03],
];

/// Column `col` of the MDS matrix times `y`, as a little-endian word.
const fn mds_column(col: usize, y: u8) -> u32 {
    let mut w = 0;
    let mut row = 0;
    while row < 4 {
        w |= (gf_mul(MDS[row][col], y, MDS_POLY) as u32) << (8 * row);
        row += 1;
    }
    w
}

/// `mds_column` for every column and byte, built at compile time so that keying
/// (once per file open and per key unwrap) costs about 1k table lookups.
const MDS_TABLE: [[u32; 256]; 4] = {
    let mut t = [[0u32; 256]; 4];
    let mut col = 0;
    while col < 4 {
        let mut y = 0;
        while y < 256 {
            t[col][y] = mds_column(col, y as u8);
            y += 1;
        }
        col += 1;
    }
    t
};

/// Byte lane `lane` of h(): the q chain with key bytes `key[0..k]` (L_0..L_{k-1}),
/// before the MDS multiply.
fn h_lane(lane: usize, mut y: u8, key: &[[u8; 4]]) -> u8 {
    let k = key.len();
    // Stages for L_{k-1} down to L_0 use Q_ORDER[lane][4-k..4]; the last q is unkeyed.
    for (stage, l) in (4 - k..4).zip(key.iter().rev()) {
        y = Q[Q_ORDER[lane][stage]][usize::from(y)] ^ l[lane];
    }
    Q[Q_ORDER[lane][4]][usize::from(y)]
}

/// h(X, L) of the paper, used by the key schedule (the round function uses the tables).
fn h(x: u32, key: &[[u8; 4]]) -> u32 {
    x.to_le_bytes().iter().enumerate().fold(0, |w, (lane, &y)| {
        w ^ MDS_TABLE[lane][usize::from(h_lane(lane, y, key))]
    })
}

/// Twofish keyed once: 40 subkeys and the four key-dependent g() tables.
/// Both are secret and wiped on drop.
#[derive(Clone)]
pub struct Twofish {
    k: [u32; 40],
    s: [[u32; 256]; 4],
}

impl Twofish {
    /// Keys of 16, 24 or 32 bytes (128, 192, 256 bits).
    pub fn new_from_key(key: &[u8]) -> Result<Self, InvalidLength> {
        if !matches!(key.len(), 16 | 24 | 32) {
            return Err(InvalidLength);
        }
        let k = key.len() / 8;
        // Me (even words), Mo (odd words) as byte quadruples, and the S-box key
        // S_i = RS · m[8i..8i+8]; S lists them in reverse (S_{k-1} first).
        let mut me = Zeroizing::new([[0u8; 4]; 4]);
        let mut mo = Zeroizing::new([[0u8; 4]; 4]);
        let mut sk = Zeroizing::new([[0u8; 4]; 4]);
        for (i, chunk) in key.chunks_exact(8).enumerate() {
            me[i].copy_from_slice(&chunk[..4]);
            mo[i].copy_from_slice(&chunk[4..]);
            for (row, rs) in RS.iter().enumerate() {
                sk[k - 1 - i][row] = rs
                    .iter()
                    .zip(chunk)
                    .fold(0, |acc, (&r, &m)| acc ^ gf_mul(r, m, RS_POLY));
            }
        }
        let mut t = Twofish {
            k: [0; 40],
            s: [[0; 256]; 4],
        };
        const RHO: u32 = 0x0101_0101;
        for i in 0..20u32 {
            let a = h(2 * i * RHO, &me[..k]);
            let b = h((2 * i + 1) * RHO, &mo[..k]).rotate_left(8);
            t.k[2 * i as usize] = a.wrapping_add(b);
            t.k[2 * i as usize + 1] = a.wrapping_add(b.wrapping_mul(2)).rotate_left(9);
        }
        for (lane, table) in t.s.iter_mut().enumerate() {
            for (x, e) in table.iter_mut().enumerate() {
                *e = MDS_TABLE[lane][usize::from(h_lane(lane, x as u8, &sk[..k]))];
            }
        }
        Ok(t)
    }

    #[inline(always)]
    fn g(&self, x: u32) -> u32 {
        let [b0, b1, b2, b3] = x.to_le_bytes();
        self.s[0][usize::from(b0)]
            ^ self.s[1][usize::from(b1)]
            ^ self.s[2][usize::from(b2)]
            ^ self.s[3][usize::from(b3)]
    }

    /// Two Feistel rounds' F outputs for the pair (a, b) with subkeys at `k`.
    #[inline(always)]
    fn f(&self, a: u32, b: u32, k: usize) -> (u32, u32) {
        let t0 = self.g(a);
        let t1 = self.g(b.rotate_left(8));
        (
            t0.wrapping_add(t1).wrapping_add(self.k[k]),
            t0.wrapping_add(t1.wrapping_mul(2))
                .wrapping_add(self.k[k + 1]),
        )
    }

    /// Encrypts one 16-byte block. The word swap after each round is unrolled away:
    /// each loop turn does two rounds with the halves' roles exchanged.
    pub fn encrypt(&self, block: &mut [u8; 16]) {
        let [mut a, mut b, mut c, mut d] = words(block, &self.k[0..4]);
        for r in 0..8 {
            let (f0, f1) = self.f(a, b, 8 + 4 * r);
            c = (c ^ f0).rotate_right(1);
            d = d.rotate_left(1) ^ f1;
            let (f0, f1) = self.f(c, d, 10 + 4 * r);
            a = (a ^ f0).rotate_right(1);
            b = b.rotate_left(1) ^ f1;
        }
        put_words(block, [c, d, a, b], &self.k[4..8]);
    }

    /// Decrypts one 16-byte block: the rounds of [`Self::encrypt`] in reverse.
    pub fn decrypt(&self, block: &mut [u8; 16]) {
        let [mut c, mut d, mut a, mut b] = words(block, &self.k[4..8]);
        for r in (0..8).rev() {
            let (f0, f1) = self.f(c, d, 10 + 4 * r);
            a = a.rotate_left(1) ^ f0;
            b = (b ^ f1).rotate_right(1);
            let (f0, f1) = self.f(a, b, 8 + 4 * r);
            c = c.rotate_left(1) ^ f0;
            d = (d ^ f1).rotate_right(1);
        }
        put_words(block, [a, b, c, d], &self.k[0..4]);
    }
}

/// The block as four little-endian words, whitened with `w`.
#[inline(always)]
fn words(block: &[u8; 16], w: &[u32]) -> [u32; 4] {
    std::array::from_fn(|i| {
        u32::from_le_bytes(block[4 * i..4 * i + 4].try_into().expect("4 bytes")) ^ w[i]
    })
}

#[inline(always)]
fn put_words(block: &mut [u8; 16], v: [u32; 4], w: &[u32]) {
    for (i, x) in v.iter().enumerate() {
        block[4 * i..4 * i + 4].copy_from_slice(&(x ^ w[i]).to_le_bytes());
    }
}

impl Drop for Twofish {
    fn drop(&mut self) {
        self.k.zeroize();
        self.s.zeroize();
    }
}

impl ZeroizeOnDrop for Twofish {}

impl fmt::Debug for Twofish {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Twofish { .. }")
    }
}

impl AlgorithmName for Twofish {
    fn write_alg_name(f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Twofish")
    }
}

/// `KeyInit` needs one nominal size; `new_from_slice` takes all three.
impl KeySizeUser for Twofish {
    type KeySize = U32;
}

impl KeyInit for Twofish {
    fn new(key: &Key<Self>) -> Self {
        Self::new_from_key(key).expect("32 bytes is a Twofish key size")
    }

    fn new_from_slice(key: &[u8]) -> Result<Self, InvalidLength> {
        Self::new_from_key(key)
    }
}

impl BlockCipher for Twofish {}

cipher::impl_simple_block_encdec!(
    Twofish, U16, cipher, block,
    encrypt: {
        let mut b: [u8; 16] = (*block.get_in()).into();
        cipher.encrypt(&mut b);
        block.get_out().copy_from_slice(&b);
    }
    decrypt: {
        let mut b: [u8; 16] = (*block.get_in()).into();
        cipher.decrypt(&mut b);
        block.get_out().copy_from_slice(&b);
    }
);

#[cfg(test)]
mod tests {
    use super::*;
    use cipher::{BlockDecrypt, BlockEncrypt};

    fn unhex<const N: usize>(s: &str) -> [u8; N] {
        hex::decode(s).unwrap().try_into().unwrap()
    }

    fn encrypt_checked(key: &[u8], pt: [u8; 16]) -> [u8; 16] {
        let t = Twofish::new_from_key(key).unwrap();
        let mut b = pt;
        t.encrypt(&mut b);
        let mut back = b;
        t.decrypt(&mut back);
        assert_eq!(back, pt);
        b
    }

    /// Full-encryption vectors from the Twofish paper (Appendix A.2 / ecb_tbl.txt).
    #[test]
    fn paper_known_answers() {
        let cases = [
            (
                "00000000000000000000000000000000",
                "00000000000000000000000000000000",
                "9f589f5cf6122c32b6bfec2f2ae8c35a",
            ),
            (
                "0123456789abcdeffedcba98765432100011223344556677",
                "00000000000000000000000000000000",
                "cfd1d2e5a9be9cdf501f13b892bd2248",
            ),
            (
                "0123456789abcdeffedcba987654321000112233445566778899aabbccddeeff",
                "00000000000000000000000000000000",
                "37527be0052334b89f0cfccae87cfa20",
            ),
            // ecb_tbl.txt I=49 rows.
            (
                "bca724a54533c6987e14aa827952f921",
                "6b459286f3ffd28d49f15b1581b08e42",
                "5d9d4eeffa9151575524f115815a12e0",
            ),
            (
                "248a7f3528b168acfdd1386e3f51e30c2e2158bc3e5fc714c1eeeca0ea696d48",
                "431058f4dbc7f734da4f02f04cc4f459",
                "37fe26ff1cf66175f5ddf4c33b97a205",
            ),
        ];
        for (key, pt, ct) in cases {
            let key = hex::decode(key).unwrap();
            assert_eq!(encrypt_checked(&key, unhex(pt)), unhex::<16>(ct), "{pt}");
        }
    }

    /// The ecb_tbl.txt chains: start from zero key and block; the next key is the
    /// previous plaintext followed by the previous key (truncated), the next
    /// plaintext the previous ciphertext. I=2, I=3 and I=49 are published.
    #[test]
    fn paper_iterated_chains() {
        for (len, i2, i3, i49) in [
            (
                16,
                "d491db16e7b1c39e86cb086b789f5419",
                "019f9809de1711858faac3a3ba20fbc3",
                "5d9d4eeffa9151575524f115815a12e0",
            ),
            (
                24,
                "88b2b2706b105e36b446bb6d731a1e88",
                "39da69d6ba4997d585b6dc073ca341b2",
                "e75449212beef9f4a390bd860a640941",
            ),
            (
                32,
                "d43bb7556ea32e46f2a282b7d45b4e0d",
                "90afe91bb288544f2c32dc239b2635e6",
                "37fe26ff1cf66175f5ddf4c33b97a205",
            ),
        ] {
            let mut key = vec![0u8; len];
            let mut pt = [0u8; 16];
            for i in 1..=49 {
                let ct = encrypt_checked(&key, pt);
                match i {
                    2 => assert_eq!(ct, unhex::<16>(i2), "{len} I=2"),
                    3 => assert_eq!(ct, unhex::<16>(i3), "{len} I=3"),
                    49 => assert_eq!(ct, unhex::<16>(i49), "{len} I=49"),
                    _ => {}
                }
                key = [&pt[..], &key[..]].concat();
                key.truncate(len);
                pt = ct;
            }
        }
    }

    /// Same bytes as the RustCrypto crate (the previous implementation) on random
    /// keys and blocks, through the `cipher` traits both implement.
    #[test]
    fn matches_twofish_crate() {
        for len in [16, 24, 32] {
            for _ in 0..50 {
                let mut key = vec![0u8; len];
                let mut data = [0u8; 64];
                getrandom::getrandom(&mut key).unwrap();
                getrandom::getrandom(&mut data).unwrap();
                let ours = Twofish::new_from_slice(&key).unwrap();
                let theirs = ::twofish::Twofish::new_from_slice(&key).unwrap();
                let mut x: Vec<cipher::Block<Twofish>> = data
                    .chunks(16)
                    .map(cipher::Block::<Twofish>::clone_from_slice)
                    .collect();
                let mut y = x.clone();
                ours.encrypt_blocks(&mut x);
                theirs.encrypt_blocks(&mut y);
                assert_eq!(x, y, "{}", hex::encode(&key));
                ours.decrypt_blocks(&mut x);
                assert_eq!(x.concat(), data);
            }
        }
    }

    #[test]
    fn rejects_other_key_sizes() {
        for len in [0, 8, 15, 17, 31, 33, 64] {
            assert!(Twofish::new_from_slice(&vec![0; len]).is_err(), "{len}");
        }
    }
}
