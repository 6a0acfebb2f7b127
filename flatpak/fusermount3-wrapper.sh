#!/bin/sh
# fusermount3 inside the sandbox. Flatpak cannot run setuid programs, so the host's
# fusermount3 makes the mount; the socket it hands /dev/fuse back on (_FUSE_COMMFD)
# is forwarded to it by flatpak-spawn.
if [ -n "$_FUSE_COMMFD" ]; then
  exec flatpak-spawn --host --forward-fd="$_FUSE_COMMFD" --env=_FUSE_COMMFD="$_FUSE_COMMFD" fusermount3 "$@"
fi
exec flatpak-spawn --host fusermount3 "$@"
