#!/bin/bash
# Third-party POSIX suites against a real `strongroomctl mount` (CI-sized by default).
#
#   src/fuse/tests/posix-suites.sh [path/to/strongroomctl]
#
# Needs: root, /dev/fuse, fuse3, keyutils, `cargo install pjdfstest@0.2.2 fsx@0.3.2`,
# and the pjdfstest users (groupadd tests; useradd -M -g tests tests).
# FSX_OPS (default 20000; the full check is 1000000), FSX_SEED (default 1), FSX_CONFIG
# (an fsx operation mix, e.g. src/fuse/tests/fsx-long.toml for million-operation runs),
# PJD=0 skips pjdfstest, MOUNT_FLAGS adds mount options (e.g. "--fnek" or "--xattr").
# Exits non-zero on any fsx mismatch or pjdfstest failure.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../../.." && pwd)
bin=${1:-$repo/target/debug/strongroomctl}
conf=${PJDFSTEST_CONF:-$here/pjdfstest.toml}
# fsx runs inside the mount: a relative FSX_CONFIG is the caller's.
fsx_config=${FSX_CONFIG:+$(realpath "$FSX_CONFIG")}
work=$(mktemp -d /tmp/strongroom-posix.XXXXXX)
chmod 755 "$work"
mkdir -m 755 "$work/lower" "$work/mnt"
echo "posix suites passphrase" > "$work/pass"
cleanup() { fusermount3 -u -z "$work/mnt" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
# fsx 0.3.2 never unmaps its mapped reads (domapread): with the default
# vm.max_map_count (65530) a long run dies with ENOMEM in mmap, whatever the file
# system. Long runs need a higher limit.
if [ "${FSX_OPS:-20000}" -gt 100000 ]; then
  sysctl -q -w vm.max_map_count=$((FSX_OPS * 2))
fi

# A private session keyring: the token never reaches the machine's @u.
keyctl session - bash -s "$bin" "$work" "$conf" "${MOUNT_FLAGS:-}" "${FSX_OPS:-20000}" "${FSX_SEED:-1}" "${PJD:-1}" "$fsx_config" <<'EOF'
set -euo pipefail
bin=$1 work=$2 conf=$3 flags=$4 ops=$5 seed=$6 pjd=$7 fsxconf=$8
# shellcheck disable=SC2086
"$bin" mount --keyring session --passphrase-file "$work/pass" --key-bytes 32 --allow-other $flags "$work/lower" "$work/mnt"
status=0
echo "== fsx -N $ops -S $seed"
(cd "$work/mnt" && fsx ${fsxconf:+-f "$fsxconf"} -N "$ops" -S "$seed" "$work/mnt/fsx.file") || status=1
if [ "$pjd" = 1 ]; then
  echo "== pjdfstest"
  out=$(cd "$work/mnt" && pjdfstest -c "$conf" -p "$work/mnt" 2>&1 || true)
  summary=$(grep '^Summary' <<<"$out" || true)
  echo "$summary"
  grep 'FAILED' <<<"$out" || true
  case "$summary" in
    "Summary: 0 failed"*) ;;
    *) status=1 ;;
  esac
fi
"$bin" umount "$work/mnt"
exit $status
EOF
