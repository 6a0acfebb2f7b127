#!/bin/bash
# Peak resident memory (VmHWM) of the userspace backend's daemon over the fsbench
# workloads, run one after another on one mount: 512 MiB written with fsync and read
# back, 5000 small files (1-16 KiB, 111 directories) extracted, a 10000-entry directory
# created and renamed, then cold find, du, ls -lR, cat of every file and ls.
#
#   src/fuse/bench-rss.sh [path/to/strongroomctl]     (root: it drops caches)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin=${1:-${CARGO_TARGET_DIR:-$here/../../target}/release/strongroomctl}
work=$(mktemp -d /tmp/strongroom-rss.XXXXXX)
trap 'fusermount3 -u -z "$work/m" 2>/dev/null || true; rm -rf "$work"' EXIT
mkdir "$work/c" "$work/m"
head -c 24 /dev/urandom | base64 > "$work/pass"
keyctl session - bash -s "$bin" "$work" <<'INNER'
set -euo pipefail
bin=$1 work=$2
"$bin" mount --keyring session --passphrase-file "$work/pass" --key-bytes 32 --fnek "$work/c" "$work/m"
pid=$(pgrep -n -f -- "$work/c")
cd "$work/m"
python3 - <<'PY'
import os, random
r = random.Random(1)
with open("big", "wb") as f:
    block = os.urandom(1 << 20)
    for _ in range(512):
        f.write(block)
    os.fsync(f.fileno())
for a in range(10):
    for b in range(10):
        d = "small/d%02d/s%02d" % (a, b)
        os.makedirs(d)
        for c in range(50):
            with open("%s/f%04d.dat" % (d, c), "wb") as f:
                f.write(r.randbytes(r.randint(1024, 16384)))
os.mkdir("dir10k")
for i in range(10000):
    os.close(os.open("dir10k/f%05d" % i, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
for i in range(10000):
    os.rename("dir10k/f%05d" % i, "dir10k/r%05d" % i)
PY
cat big > /dev/null
sync; echo 3 > /proc/sys/vm/drop_caches
find . > /dev/null; sleep 0.6; du -s . > /dev/null; ls -lR > /dev/null
find small -type f -print0 | xargs -0 cat > /dev/null; ls dir10k > /dev/null
grep -E "VmHWM|Threads" "/proc/$pid/status"
cd /; "$bin" umount "$work/m"
INNER
