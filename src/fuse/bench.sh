#!/bin/bash
# End-to-end speed of the userspace backend against its peers, with the shared harness
# fsbench (same workloads, same disk, one run; compare ratios, not absolute figures).
#
#   src/fuse/bench.sh [fsbench options...]      e.g. --rounds 3 --md /tmp/r.md
#
# Needs: root (fsbench drops caches), /dev/fuse, keyutils, a release build
# (`cargo build --release -p strongroomctl`), and the peers from apt:
# fuse3 gocryptfs securefs encfs cryfs bindfs fio.
# FSBENCH (default /work/shared/bench/fsbench), BACKENDS (default
# plain,gocryptfs,securefs,encfs,cryfs), CIPHER_BYTES (default 32: AES-256),
# STRONGROOM_FLAGS (default --fnek; e.g. "--fnek --xattr").
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
bin=${STRONGROOMCTL:-${CARGO_TARGET_DIR:-$repo/target}/release/strongroomctl}
fsbench=${FSBENCH:-/work/shared/bench/fsbench}
[ -x "$bin" ] || { echo "no $bin: cargo build --release -p strongroomctl" >&2; exit 2; }
[ -x "$fsbench" ] || { echo "no fsbench at $fsbench (set FSBENCH)" >&2; exit 2; }
flags=${STRONGROOM_FLAGS:---fnek}
mount="$bin mount --keyring session --passphrase-file {passfile} --key-bytes ${CIPHER_BYTES:-32} $flags {cipher} {mnt}"
# The key goes to a private session keyring, never the machine's @u.
exec keyctl session - "$fsbench" \
  --backends "${BACKENDS:-plain,gocryptfs,securefs,encfs,cryfs}" \
  --backend "name=strongroom,mount=$mount,umount=$bin umount {mnt}" \
  "$@"
