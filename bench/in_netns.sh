#!/bin/sh
# Run a command in a fresh network namespace of its own (root), so that the bench's lab and
# native Kamailio never meet the ports of a test lab or of anyone else. Without root (or
# without `ip netns`), the command runs where it is: then no other lab may run here.
#   bench/in_netns.sh COMMAND [ARGS...]
ns="blfbench-$$"
if [ "$(id -u)" = 0 ] && command -v ip >/dev/null 2>&1 && ip netns add "$ns" 2>/dev/null; then
	trap 'ip netns delete "$ns" 2>/dev/null' EXIT INT TERM
	ip netns exec "$ns" ip link set lo up
	ip netns exec "$ns" "$@"
	exit $?
fi
echo "bench: no network namespace (not root, or none available): running in this one" >&2
exec "$@"
