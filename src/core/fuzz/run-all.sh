#!/bin/sh
# Runs every fuzz target for $1 seconds (default 60), seeded from the fixtures.
set -e
cd "$(dirname "$0")"
secs=${1:-60}
fx=../../../tests/fixtures
for t in header packet_set filename; do
    mkdir -p corpus/$t
done
cargo +nightly fuzz run header corpus/header $fx/bad $fx/kernel/aes128/lower -- -max_total_time="$secs" -max_len=4096
cargo +nightly fuzz run packet_set corpus/packet_set -- -max_total_time="$secs" -max_len=4096
cargo +nightly fuzz run filename corpus/filename -- -max_total_time="$secs" -max_len=512
