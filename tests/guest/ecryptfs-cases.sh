#!/bin/bash
# Runs inside the test VM (xtask::run, as root): kernel eCryptfs cases, one per line
# of $W/cases:  NAME OP CIPHER KEY_BYTES FNEK XATTR
#   OP     check    kernel encrypts $W/plain, then decrypts it again after a remount
#          encrypt  the same, and exports the raw lower tree to $W/kernel-lower/NAME
#          decrypt  kernel mounts $W/host-lower/NAME (made on the host) and compares
#   FNEK   none | same (FNEK sig = passphrase sig) | separate (ecryptfs-add-passphrase --fnek)
#   XATTR  1 for ecryptfs_xattr_metadata (header in the user.ecryptfs xattr)
# Keys come from ecryptfs-add-passphrase (ecryptfs-utils) with the first line of
# $W/passphrase. Prints "CASE NAME OP: ok" or "CASE NAME OP: FAIL why" plus indented
# details (diff, the kernel's eCryptfs log lines) per case; exits 0 once all ran.
set -u
W=$1
PLAIN=$W/plain
export LC_ALL=C.UTF-8

. "$(dirname "$0")/ecryptfs-lib.sh"
load_keys "$W/passphrase" || exit 2

details() { sed -e 's/^/    /' | head -n 40; }
fail() {
	echo "CASE $name $op: FAIL $1"
	[ -s /tmp/case.log ] && details < /tmp/case.log
	dmesg | grep -i ecryptfs | tail -n 10 | sed 's/^/    dmesg: /'
}
# diff of the plaintext tree and the decrypted view (file contents, symlink targets, names)
same_tree() {
	# With ecryptfs_xattr_metadata the kernel reports the lower file's size until a
	# file is first opened (it reads the xattr header only at open), and diff trusts
	# sizes for binary files: open everything first.
	[ "$xattr" = 1 ] && find "$1" -type f -exec cat {} + > /dev/null 2>&1
	diff -r --no-dereference "$PLAIN" "$1" > /tmp/case.log 2>&1
}
mnt() { mount -i -t ecryptfs -o "$opts" "$lower" "$upper" > /tmp/case.log 2>&1; }
umnt() { sync; umount "$upper" > /tmp/case.log 2>&1; }

run_case() {
	case_opts "$cipher" "$kb" "$fnek" "$xattr" || { fail "bad FNEK mode $fnek"; return; }
	lower=/scratch/$name/lower upper=/scratch/$name/upper
	mkdir -p "$lower" "$upper"
	: > /tmp/case.log
	dmesg -C
	case $op in
	check | encrypt)
		mnt || { fail "mount -t ecryptfs -o $opts"; return; }
		cp -a "$PLAIN/." "$upper/" 2> /tmp/case.log || { fail "copy into the mount"; umnt; return; }
		umnt || { fail "umount"; return; }
		# decrypt from disk, not from the page cache
		mnt || { fail "second mount"; return; }
		same_tree "$upper" || { fail "kernel decrypt of its own encryption differs"; umnt; return; }
		umnt || { fail "second umount"; return; }
		if [ "$op" = encrypt ]; then
			out=$W/kernel-lower/$name
			mkdir -p "$out"
			cp -a --preserve=xattr "$lower/." "$out/" 2> /tmp/case.log \
				|| { fail "export of the lower tree (does the host file system keep user xattrs?)"; return; }
		fi
		;;
	decrypt)
		cp -a "$W/host-lower/$name/." "$lower/" 2> /tmp/case.log || { fail "import of the lower tree"; return; }
		mnt || { fail "mount -t ecryptfs -o $opts"; return; }
		same_tree "$upper" || { fail "kernel decrypt of the host-made tree differs from the plaintext"; umnt; return; }
		# every lower entry must be visible decrypted (unreadable names are hidden silently)
		nl=$(cd "$lower" && find . -mindepth 1 | wc -l)
		nu=$(cd "$upper" && find . -mindepth 1 | wc -l)
		[ "$nl" = "$nu" ] || { echo "$nl lower entries, $nu decrypted" > /tmp/case.log; fail "entry count"; umnt; return; }
		umnt || { fail "umount"; return; }
		;;
	*) fail "bad OP"; return ;;
	esac
	echo "CASE $name $op: ok ($opts)"
}

while read -r name op cipher kb fnek xattr; do
	[ -n "$name" ] || continue
	run_case
done < "$W/cases"
echo "DONE"
