#!/bin/bash
# Runs inside the test VM (xtask::run, as root) for tests/fuse_kernel_interop.rs. One job
# per line of $W/jobs:  OP NAME CIPHER KEY_BYTES FNEK XATTR PASSTHROUGH SEED OPS
#   read   the kernel mounts $W/fuse-lower/NAME (written through `strongroomctl mount`)
#          and writes the manifest of its decrypted view to $W/kernel-view/NAME.*
#   write  the kernel runs a randomized tree workload (Perl's rand seeded with SEED,
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

# The kernel-side randomized tree workload in the current directory, in one Perl
# process (perl-base is always there; a fork per operation is slow under TCG).
workload() { # SEED OPS
	perl - "$1" "$2" <<'PERL'
use strict;
use warnings;
my ($seed, $ops) = @ARGV;
srand($seed);
sub rnd { int(rand($_[0])) }
sub random_bytes {
	my $n = shift;
	my $s = '';
	open(my $u, '<:raw', '/dev/urandom') or die "urandom: $!";
	read($u, $s, $n) if $n > 0;
	return $s;
}
sub listing {
	my (@files, @dirs);
	my @todo = ('.');
	while (@todo) {
		my $d = shift @todo;
		push @dirs, $d;
		opendir(my $h, $d) or next;
		for my $n (sort readdir $h) {
			next if $n eq '.' || $n eq '..';
			my $p = "$d/$n";
			if (-l $p) { }
			elsif (-d _) { push @todo, $p }
			elsif (-f _) { push @files, $p }
		}
	}
	return (\@files, \@dirs);
}
sub size { rnd(4) ? rnd(20000) : rnd(200000) }
sub write_file {
	my ($p, $mode, $off, $data) = @_;
	open(my $fh, $mode, $p) or return;
	binmode $fh;
	seek($fh, $off, 0) if defined $off;
	print $fh $data;
	close $fh;
}
mkdir 'sub'; mkdir 'sub/deeper'; mkdir 'dir with spaces';
for my $i (0 .. $ops - 1) {
	my ($files, $dirs) = listing();
	my $n = @$files;
	my $f = $n ? $files->[rnd($n)] : '';
	my $g = $n ? $files->[rnd($n)] : '';
	my $t = $dirs->[rnd(scalar @$dirs)];
	my $op = $n < 4 ? 0 : rnd(14);
	if ($op <= 1) { write_file("$t/f$i-名前", '>', undef, random_bytes(size())) }
	elsif ($op == 2) { write_file("$t/e$i", '>', undef, random_bytes(4096 * (1 + rnd(4)) + rnd(3) - 1)) }
	elsif ($op == 3) { write_file($f, '+<', rnd((-s $f) + 12000), random_bytes(1 + rnd(9000))) }
	elsif ($op == 4) { truncate($f, size()) }
	elsif ($op == 5) { write_file($f, '>>', undef, random_bytes(rnd(5000))) }
	elsif ($op == 6) { rename($f, $g) }
	elsif ($op == 7) { rename($f, "$t/m$i") }
	elsif ($op == 8) { unlink($f) }
	elsif ($op == 9) { mkdir("$t/d$i") }
	elsif ($op == 10) { symlink(rnd(2) ? "../$f" : "/nowhere/ünï $i", "$t/l$i") }
	elsif ($op == 11) { link($f, "$t/h$i") }
	elsif ($op == 12) { rmdir($t) if $t ne '.' }
	else { rename($t, $dirs->[rnd(scalar @$dirs)] . "/r$i") if $t ne '.' }
}
PERL
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
