#!/bin/bash
# Runs inside the test VM (xtask::run, as root) for tests/fuse_kernel_interop.rs. One job
# per line of $W/jobs:  OP NAME CIPHER KEY_BYTES FNEK XATTR PASSTHROUGH SEED OPS
#   read   the kernel mounts $W/fuse-lower/NAME (written through `strongroomctl mount`)
#          and writes the manifest of its decrypted view to $W/kernel-view/NAME.*
#   write  the kernel runs a randomized tree workload (bash's RANDOM seeded with SEED,
#          OPS operations) in a fresh mount on the scratch disk, remounts, writes the
#          manifest of what it reads back to $W/kernel-made/NAME.* and exports the lower
#          tree to $W/kernel-lower/NAME
# FNEK / XATTR / PASSTHROUGH as in ecryptfs-lib.sh. A manifest is two files:
#   NAME.meta  find -printf '%y\0%s\0%n\0%P\0%l\0' (type, size, links, path, target)
#   NAME.sums  sha256sum -z of the files; files of $BIG bytes or more are hashed over
#              64 KiB samples (at 0, before each GiB boundary and at the end), as
#              `Manifest::of_dir` does on the host.
# Prints "JOB OP NAME: ok" or "JOB OP NAME: FAIL why" plus indented details; "DONE" last.
set -u
W=$1
BIG=$((64 << 20))
export LC_ALL=C.UTF-8
. "$(dirname "$0")/ecryptfs-lib.sh"
load_keys "$W/passphrase" || exit 2

fail() {
	echo "JOB $op $name: FAIL $1"
	[ -s /tmp/job.log ] && sed -e 's/^/    /' /tmp/job.log | head -n 40
	dmesg | grep -i ecryptfs | tail -n 10 | sed 's/^/    dmesg: /'
}
mnt() { mount -i -t ecryptfs -o "$opts" "$lower" "$upper" > /tmp/job.log 2>&1; }
umnt() { sync; umount "$upper" > /tmp/job.log 2>&1; }

sampled_sum() { # FILE: sha256 of the samples the host's Manifest::of_dir takes
	local f=$1 size k off
	size=$(stat -c %s "$f")
	{
		for ((k = 0; (k << 30) < size; k++)); do
			off=$(((k << 30) - (k ? 32768 : 0)))
			dd if="$f" iflag=skip_bytes,count_bytes skip=$off bs=65536 count=65536 status=none
		done
		dd if="$f" iflag=skip_bytes,count_bytes skip=$((size > 65536 ? size - 65536 : 0)) \
			bs=65536 count=65536 status=none
	} | sha256sum | { read -r h _ && printf '%s  %s\0' "$h" "$f"; }
}

manifest() { # DIR OUT
	(
		cd "$1" || exit 1
		# Hash first: with ecryptfs_xattr_metadata the kernel shows the lower size
		# until a file was opened (it reads the xattr header at open).
		find . -type f -size -${BIG}c -print0 | xargs -0r sha256sum -z > "$2.sums" || exit 1
		find . -type f -size +$((BIG - 1))c -print0 | while IFS= read -r -d '' f; do
			sampled_sum "$f" || exit 1
		done >> "$2.sums" || exit 1
		find . -mindepth 1 -printf '%y\0%s\0%n\0%P\0%l\0' > "$2.meta"
	) 2> /tmp/job.log
}

# The kernel-side randomized tree workload in the current directory.
workload() { # SEED OPS
	local i n f g t sz files dirs
	RANDOM=$1
	mkdir -p sub/deeper 'dir with spaces'
	for ((i = 0; i < $2; i++)); do
		# Relisting costs forks, slow under TCG: every 8 operations (an operation on
		# a name that went away meanwhile just fails). No process substitution: the
		# guest has no /dev/fd.
		if ((i % 8 == 0)); then
			find . -type f -print0 > /tmp/files
			find . -type d -print0 > /tmp/dirs
			mapfile -d '' files < /tmp/files
			mapfile -d '' dirs < /tmp/dirs
		fi
		n=${#files[@]}
		f=${files[RANDOM % (n > 0 ? n : 1)]:-}
		g=${files[RANDOM % (n > 0 ? n : 1)]:-}
		t=${dirs[RANDOM % ${#dirs[@]}]}
		sz=$(((RANDOM * 32768 + RANDOM) % (RANDOM % 4 ? 20000 : 200000)))
		case $((n < 4 ? 0 : RANDOM % 13)) in
			0 | 1) head -c "$sz" /dev/urandom > "$t/f$i-$((RANDOM % 3 ? i : 4096))-名前" ;;
			2) head -c $((4096 * (RANDOM % 4 + 1) + RANDOM % 3 - 1)) /dev/urandom > "$t/e$i" ;;
			3) # overwrite at a random offset, possibly past the end (a hole)
				dd if=/dev/urandom of="$f" bs=$((RANDOM % 9000 + 1)) count=1 conv=notrunc \
					oflag=seek_bytes seek=$((RANDOM % 70000)) status=none ;;
			4) truncate -s "$sz" "$f" ;;
			5) head -c $((RANDOM % 5000)) /dev/urandom >> "$f" ;;
			6) [ "$f" != "$g" ] && mv -f "$f" "$g" ;;
			7) mv -f "$f" "$t/m$i" ;;
			8) rm -f "$f" ;;
			9) mkdir "$t/d$i" ;;
			10) ln -s "$(((RANDOM % 2)) && echo "../$f" || echo "/nowhere/ünï $i")" "$t/l$i" ;;
			11) ln "$f" "$t/h$i" ;;
			12) [ "$t" != . ] && rmdir "$t" 2> /dev/null ;;
		esac
	done
	return 0
}

run_job() {
	: > /tmp/job.log
	dmesg -C
	case_opts "$cipher" "$kb" "$fnek" "$xattr" "$pass" || { fail "bad FNEK mode $fnek"; return; }
	upper=/tmp/upper-$op-$name
	mkdir -p "$upper"
	case $op in
		read)
			lower=$W/fuse-lower/$name
			mkdir -p "$W/kernel-view"
			mnt || { fail "mount -t ecryptfs -o $opts"; return; }
			manifest "$upper" "$W/kernel-view/$name" || { fail "manifest"; umnt; return; }
			umnt || { fail "umount"; return; }
			;;
		write)
			lower=/scratch/$name
			mkdir -p "$lower" "$W/kernel-made"
			mnt || { fail "mount -t ecryptfs -o $opts"; return; }
			t0=$SECONDS
			(cd "$upper" && workload "$seed" "$ops") > /tmp/job.log 2>&1 \
				|| { fail "workload"; umnt; return; }
			umnt || { fail "umount"; return; }
			t1=$SECONDS
			# the manifest from disk, not from the page cache
			mnt || { fail "second mount"; return; }
			manifest "$upper" "$W/kernel-made/$name" || { fail "manifest"; umnt; return; }
			umnt || { fail "second umount"; return; }
			t2=$SECONDS
			mkdir -p "$W/kernel-lower"
			cp -a --preserve=xattr "$lower" "$W/kernel-lower/$name" 2> /tmp/job.log \
				|| { fail "export of the lower tree"; return; }
			echo "JOB $op $name: ok ($opts, ${SECONDS}s)"
			echo "    workload $((t1 - t0)) s, manifest $((t2 - t1)) s, export $((SECONDS - t2)) s, $(du -sh "$lower" | cut -f1)"
			return
			;;
		*) fail "bad OP"; return ;;
	esac
	echo "JOB $op $name: ok ($opts, ${SECONDS}s)"
}

while read -r op name cipher kb fnek xattr pass seed ops; do
	[ -n "$op" ] || continue
	run_job
done < "$W/jobs"
echo "DONE"
