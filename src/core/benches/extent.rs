//! Hot-path costs: one 4 KiB extent (the FUSE read/write unit) and one file name.
//! Run: `cargo bench -p strongroom-core --bench extent`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use strongroom_core::cipher::{Cipher, CipherSpec};
use strongroom_core::extent::{FileKey, EXTENT_SIZE};

fn extents(c: &mut Criterion) {
    let mut g = c.benchmark_group("extent");
    for (cipher, bytes) in [
        (Cipher::Aes, 16),
        (Cipher::Aes, 32),
        (Cipher::Cast6, 16),
        (Cipher::Cast6, 32),
        (Cipher::Twofish, 16),
        (Cipher::Twofish, 32),
    ] {
        let spec = CipherSpec::new(cipher, bytes).unwrap();
        let key = FileKey::generate(spec).unwrap();
        let name = format!("{cipher}-{}", bytes * 8);
        // Keying happens per file open (FEK) and per key unwrap (SKEK).
        g.throughput(Throughput::Elements(1));
        g.bench_function(format!("{name} key setup"), |b| {
            b.iter(|| FileKey::from_fek(spec, key.fek()).unwrap())
        });
        g.throughput(Throughput::Bytes(EXTENT_SIZE as u64));
        let mut buf = vec![0x5au8; EXTENT_SIZE];
        g.bench_function(format!("{name} encrypt"), |b| {
            b.iter(|| key.encrypt_extent(7, &mut buf))
        });
        g.bench_function(format!("{name} decrypt"), |b| {
            b.iter(|| key.decrypt_extent(7, &mut buf))
        });
        // FUSE writes come in up to 128 KiB: 32 extents side by side, per extent.
        let mut big = vec![0x5au8; 32 * EXTENT_SIZE];
        g.throughput(Throughput::Bytes(big.len() as u64));
        g.bench_function(format!("{name} encrypt (32-extent batch)"), |b| {
            b.iter(|| key.encrypt_extents(7, &mut big))
        });
    }
    g.finish();
}

criterion_group!(benches, extents);
criterion_main!(benches);
