//! Hot-path costs: one 4 KiB extent (the FUSE read/write unit) and one file name.
//! Run: `cargo bench -p strongroom-core --bench extent`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use strongroom_core::cipher::{Cipher, CipherSpec};
use strongroom_core::extent::{FileKey, EXTENT_SIZE};
use strongroom_core::filename::FilenameKey;
use strongroom_core::kdf::Skek;

fn extents(c: &mut Criterion) {
    let mut g = c.benchmark_group("extent");
    for bytes in [16, 32] {
        let key = FileKey::generate(CipherSpec::new(Cipher::Aes, bytes).unwrap()).unwrap();
        g.throughput(Throughput::Bytes(EXTENT_SIZE as u64));
        let mut buf = vec![0x5au8; EXTENT_SIZE];
        let bits = bytes * 8;
        g.bench_function(format!("aes-{bits} encrypt"), |b| {
            b.iter(|| key.encrypt_extent(7, &mut buf))
        });
        g.bench_function(format!("aes-{bits} decrypt"), |b| {
            b.iter(|| key.decrypt_extent(7, &mut buf))
        });
        // FUSE writes come in up to 128 KiB: 32 extents side by side, per extent.
        let mut big = vec![0x5au8; 32 * EXTENT_SIZE];
        g.throughput(Throughput::Bytes(big.len() as u64));
        g.bench_function(format!("aes-{bits} encrypt (32-extent batch)"), |b| {
            b.iter(|| key.encrypt_extents(7, &mut big))
        });
    }
    g.finish();
}

fn names(c: &mut Criterion) {
    let mut g = c.benchmark_group("name");
    // A fixed SKEK: the 65536-round KDF is not what is measured here.
    let key = FilenameKey::new(
        Skek::from_bytes([0x42; 64]),
        CipherSpec::new(Cipher::Aes, 16).unwrap(),
    )
    .unwrap();
    let plain = b"Quarterly report (final).odt";
    let lower = key.encrypt(plain).unwrap();
    g.bench_function("aes-128 encrypt", |b| {
        b.iter(|| key.encrypt(plain).unwrap())
    });
    g.bench_function("aes-128 decrypt", |b| {
        b.iter(|| key.decrypt(&lower).unwrap())
    });
    g.finish();
}

criterion_group!(benches, extents, names);
criterion_main!(benches);
