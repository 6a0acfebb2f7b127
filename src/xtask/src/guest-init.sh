#!/bin/sh
# strongroom-vm guest /init (busybox sh, PID 1). Builds the guest's root from the
# host's root file system (read-only 9p share, made writable by an overlay on a
# tmpfs), mounts the scratch disk and the writable shares at their host paths,
# runs the job's command chrooted in that root with stdout/stderr on two virtio
# serial ports, writes its exit status to the job share and powers off.
export PATH=/sbin:/bin
umask 022
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev

note() { read -r up _ < /proc/uptime; echo "[$up] strongroom-vm guest: $*" > /dev/console; }
die() { note "FATAL: $*"; echo "$*" > /job/failure 2> /dev/null; poweroff -f; sleep 10; }
load() { for m in "$@"; do modprobe "$m" 2> /dev/null || note "modprobe $m failed"; done; }

note "init started"
load $(cat /etc/boot-modules)
note "modules loaded"
P9=trans=virtio,version=9p2000.L,msize=512000
mkdir -p /job /hostroot /ovl /newroot
mount -t 9p -o "$P9,cache=none" job /job || die "cannot mount the job share"
. /job/job.env || die "cannot read job.env"
# The host root: read-only and unchanging while the job runs, so caching is safe.
mount -t 9p -o "$P9,cache=loose,ro" hostroot /hostroot || die "cannot mount the host root share"
mount -t tmpfs -o mode=755 tmpfs /ovl
mkdir /ovl/upper /ovl/work
mount -t overlay -o lowerdir=/hostroot,upperdir=/ovl/upper,workdir=/ovl/work overlay /newroot \
	|| die "cannot mount the overlay root"
R=/newroot
note "root mounted"
mount -t proc proc $R/proc
mount -t sysfs sysfs $R/sys
mount -t devtmpfs devtmpfs $R/dev
mkdir -p $R/dev/pts $R/dev/shm
mount -t devpts -o newinstance,ptmxmode=0666 devpts $R/dev/pts
mount -t tmpfs -o mode=1777 tmpfs $R/dev/shm
mount -t tmpfs -o mode=1777 tmpfs $R/tmp
mount -t tmpfs -o mode=755 tmpfs $R/run
mount -t fusectl fusectl $R/sys/fs/fuse/connections 2> /dev/null
mkdir -p $R/run/strongroom-vm
mount -o bind /job $R/run/strongroom-vm
if [ -b /dev/vda ]; then
	mkdir -p $R/scratch
	mount -t ext4 -o user_xattr,noinit_itable /dev/vda $R/scratch || die "cannot mount the scratch disk"
fi
# writable shares at their host paths (the host sorted them parents first)
i=0
while [ "$i" -lt "$SHARES" ]; do
	p=$(cat "/job/share$i.path")
	mkdir -p "$R$p" && mount -t 9p -o "$P9,cache=none" "share$i" "$R$p" || die "cannot mount share $p"
	i=$((i + 1))
done
if [ "$USB_DISKS" -gt 0 ]; then
	load $(cat /etc/usb-modules)
	n=0
	while [ "$(ls -d /sys/block/sd* 2> /dev/null | wc -l)" -lt "$USB_DISKS" ]; do
		n=$((n + 1))
		[ $n -gt 300 ] && die "only $(ls -d /sys/block/sd* 2> /dev/null | wc -l) of $USB_DISKS USB disks appeared"
		sleep 0.1
	done
fi
port() {
	for d in /sys/class/virtio-ports/*; do
		[ "$(cat "$d/name" 2> /dev/null)" = "$1" ] && { echo "/dev/${d##*/}"; return 0; }
	done
	return 1
}
n=0
until OUT=$(port stdout) && ERR=$(port stderr) && [ -c "$OUT" ] && [ -c "$ERR" ]; do
	n=$((n + 1))
	[ $n -gt 300 ] && die "the virtio output ports did not appear"
	sleep 0.05
done
read -r up _ < /proc/uptime
echo "$up" > /job/ready

note "running the command"
chroot $R /bin/sh /run/strongroom-vm/cmd.sh < /dev/null > "$OUT" 2> "$ERR"
rc=$?
note "command exited with status $rc"
# nothing may outlive the command: stop leftovers (daemons, FUSE servers) first
kill -TERM -1 2> /dev/null && sleep 0.2 && kill -KILL -1 2> /dev/null
sync
for m in $(awk -v r="$R" 'index($2, r) == 1 { print $2 }' /proc/mounts | sort -r); do umount "$m" 2> /dev/null || umount -l "$m" 2> /dev/null; done
note "powering off"
echo "$rc" > /job/status
sync
umount /job
poweroff -f
sleep 10
