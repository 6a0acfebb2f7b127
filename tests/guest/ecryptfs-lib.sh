# Sourced by the guest scripts (bash, as root in the test VM): the passphrase tokens
# and the kernel mount options of a case.
#   load_keys FILE   adds the passphrase in the first line of FILE with ecryptfs-utils
#                    (ecryptfs-add-passphrase --fnek); sets SIG and FNEK_SIG
#   case_opts CIPHER KEY_BYTES FNEK XATTR [PASSTHROUGH]
#                    sets opts for mount -t ecryptfs; FNEK is none | same (FNEK sig =
#                    passphrase sig) | separate (the --fnek token); XATTR and PASSTHROUGH 0/1
load_keys() {
	local added sigs
	keyctl link @u @s > /dev/null 2>&1
	added=$(ecryptfs-add-passphrase --fnek - < "$1" 2>&1) \
		|| { echo "SETUP FAIL: ecryptfs-add-passphrase: $added"; return 2; }
	sigs=$(sed -n 's/.*sig \[\([0-9a-f]*\)\].*/\1/p' <<< "$added")
	SIG=$(sed -n 1p <<< "$sigs")
	FNEK_SIG=$(sed -n 2p <<< "$sigs")
	[ -n "$SIG" ] && [ -n "$FNEK_SIG" ] || { echo "SETUP FAIL: no sigs in: $added"; return 2; }
	echo "SETUP sig=$SIG fnek_sig=$FNEK_SIG kernel=$(uname -r)"
}

case_opts() {
	opts="ecryptfs_sig=$SIG,ecryptfs_cipher=$1,ecryptfs_key_bytes=$2"
	case $3 in
		none) ;;
		same) opts+=",ecryptfs_fnek_sig=$SIG" ;;
		separate) opts+=",ecryptfs_fnek_sig=$FNEK_SIG" ;;
		*) return 1 ;;
	esac
	[ "$4" = 1 ] && opts+=",ecryptfs_xattr_metadata"
	[ "${5:-0}" = 1 ] && opts+=",ecryptfs_passthrough"
	return 0
}
