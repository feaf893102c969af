#!/bin/bash
# Provision one BLF host: an etcd member of zone z1 and a Kamailio instance (docs/deploy.md).
# The Vagrantfile runs exactly this on each of its three VMs; a production host runs it too.
# Idempotent: run it again with the same arguments and the host ends up the same.
#
#   provision.sh --instance ks1 --ip 192.168.56.11 \
#       --members 192.168.56.11,192.168.56.12,192.168.56.13 --secret SECRET \
#       [--zone z1] [--sip-port 5060] [--src DIR] [--no-systemctl]
#
#   --instance   this host's instance name (BLF_INSTANCE; its lease and call legs carry it)
#   --ip         this host's address: SIP, and its etcd member's client and peer URLs
#   --members    the zone's etcd members' addresses, the same list in the same order on every
#                host (3, or 1 for a one-host cluster); it contains --ip, whose position N
#                names this host's member ZONE-etcdN
#   --secret     BLF_AUTH_SECRET, the same on every instance of the cluster
#   --zone       the zone (default z1): its etcd cluster is ZONE-etcd1..3, token blf-ZONE
#   --sip-port   default 5060 (UDP and TCP)
#   --src        the project's source tree (default: the tree this script is in)
#   --no-systemctl  write everything but start nothing: the systemctl commands it would run
#                are printed as "skipped: systemctl ...". With PROVISION_ROOT set (a
#                directory standing for /), every file goes under it and the files written
#                name their paths under it. This is how tests/e2e/test_provision.py runs the
#                script for three network namespaces standing in for the VMs.
#
# What it does: installs the Debian packages (apt only when one is missing), the project to
# /opt/blf with a venv (/opt/blf/.venv, Debian's Python libraries seen through
# --system-site-packages), writes /etc/blf/blf.env (from etc/blf.env.example) and
# /etc/blf/etcd-ZONE-etcdN.env (from etc/blf-etcd-member.env.example's keys), installs
# blf-etcd@.service, blf-kamailio@.service and blfctl-maintain.{service,timer} to
# /etc/systemd/system, disables Debian's own kamailio.service and etcd.service, and enables
# and starts blf-etcd@ZONE-etcdN, memcached, blf-kamailio@INSTANCE (and the maintenance
# timer on the first member's host only, so that two hosts never defragment at once).
set -euo pipefail

PACKAGES=(kamailio kamailio-python3-modules etcd-server etcd-client memcached python3-venv
          python3-etcd3 python3-lxml python3-pymemcache python3-setuptools python3-wheel)
ROOT="${PROVISION_ROOT:-}"
ROOT="${ROOT%/}"
ZONE=z1
SIP_PORT=5060
SRC="$(cd "$(dirname "$0")/../.." && pwd)"
INSTANCE="" IP="" MEMBERS="" SECRET="" SYSTEMCTL=1

die() { echo "provision.sh: $*" >&2; exit 2; }

while [ $# -gt 0 ]; do
    case "$1" in
        --instance) INSTANCE="${2:?}"; shift 2 ;;
        --ip) IP="${2:?}"; shift 2 ;;
        --members) MEMBERS="${2:?}"; shift 2 ;;
        --secret) SECRET="${2:?}"; shift 2 ;;
        --zone) ZONE="${2:?}"; shift 2 ;;
        --sip-port) SIP_PORT="${2:?}"; shift 2 ;;
        --src) SRC="$(cd "${2:?}" && pwd)"; shift 2 ;;
        --no-systemctl) SYSTEMCTL=0; shift ;;
        *) die "unknown argument $1 (see the head of this script)" ;;
    esac
done
if [ -z "$INSTANCE" ] || [ -z "$IP" ] || [ -z "$MEMBERS" ] || [ -z "$SECRET" ]; then
    die "--instance, --ip, --members and --secret are required"
fi
[[ "$INSTANCE" =~ ^[A-Za-z0-9_-]+$ ]] || die "--instance: letters, digits, - and _ only"
[[ "$ZONE" =~ ^[a-z0-9-]+$ ]] || die "--zone: lower-case letters, digits and - only"
[[ "$SECRET" =~ ^[^[:space:]\'\"]+$ ]] || die "--secret: no spaces or quotes"
[ -n "$ROOT" ] && [ "$SYSTEMCTL" = 1 ] && die "PROVISION_ROOT is for --no-systemctl runs only"
[ "$(id -u)" = 0 ] || die "run as root"

IFS=, read -r -a ADDRESSES <<< "$MEMBERS"
INDEX=0
CLUSTER="" ENDPOINTS="$IP:2379"
for i in "${!ADDRESSES[@]}"; do
    address="${ADDRESSES[$i]}"
    CLUSTER="${CLUSTER:+$CLUSTER,}$ZONE-etcd$((i + 1))=http://$address:2380"
    if [ "$address" = "$IP" ]; then INDEX=$((i + 1)); else ENDPOINTS="$ENDPOINTS,$address:2379"; fi
done
[ "$INDEX" -gt 0 ] || die "--ip $IP is not in --members $MEMBERS"
MEMBER="$ZONE-etcd$INDEX"

systemctl_() {
    if [ "$SYSTEMCTL" = 1 ]; then systemctl "$@"; else echo "skipped: systemctl $*"; fi
}

install_packages() {
    local missing=()
    for package in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed" || missing+=("$package")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "installing ${missing[*]}"
        apt-get update -q
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
    fi
}

install_project() {
    local dest="$ROOT/opt/blf"
    mkdir -p "$dest"
    # Everything of the previous install but its venv goes; then the source tree is copied.
    find "$dest" -mindepth 1 -maxdepth 1 ! -name .venv -exec rm -rf {} +
    tar -C "$SRC" --exclude=./.venv --exclude=./var --exclude=./.git --exclude=./.vagrant --exclude='*.egg-info' \
        --exclude='__pycache__' -cf - . | tar -C "$dest" -xf -
    [ -x "$dest/.venv/bin/python" ] || /usr/bin/python3 -m venv --system-site-packages "$dest/.venv"
    # No download: the project depends only on Debian's packages (pyproject.toml).
    "$dest/.venv/bin/pip" install -q --no-index --no-deps --no-build-isolation "$dest"
    chmod -R a+rX "$dest"
}

# KEY=VALUE of the template, with the given keys replaced (the template's comments kept).
render_env() {
    local template="$1"; shift
    local script=""
    for pair in "$@"; do
        script="$script
s|^${pair%%=*}=.*|$pair|"
    done
    sed -e "$script" "$template"
}

write_env_files() {
    local etc="$ROOT/etc/blf"
    install -d -m 0755 "$etc"
    render_env "$SRC/etc/blf.env.example" \
        "BLF_KEMI_SCRIPT=$ROOT/opt/blf/kemi/blf_kemi.py" "BLF_INSTANCE=$INSTANCE" "BLF_SIP=$IP:$SIP_PORT" \
        "BLF_ETCD=$ENDPOINTS" "BLF_MEMCACHED=127.0.0.1:11211" "BLF_AUTH_SECRET=$SECRET" \
        > "$etc/blf.env.new"
    # Every zone's members, this host's first (statestore.zones): here the one zone.
    echo "BLF_ZONES=$ZONE=$ENDPOINTS" >> "$etc/blf.env.new"
    install -m 0640 -g kamailio "$etc/blf.env.new" "$etc/blf.env"
    rm -f "$etc/blf.env.new"
    {
        echo "# Written by etc/provision/provision.sh: member $MEMBER of zone $ZONE."
        echo "ETCD_NAME=$MEMBER"
        echo "ETCD_DATA_DIR=$ROOT/var/lib/etcd/blf-$MEMBER"
        echo "ETCD_LISTEN_CLIENT_URLS=http://$IP:2379"
        echo "ETCD_ADVERTISE_CLIENT_URLS=http://$IP:2379"
        echo "ETCD_LISTEN_PEER_URLS=http://$IP:2380"
        echo "ETCD_INITIAL_ADVERTISE_PEER_URLS=http://$IP:2380"
        echo "ETCD_LISTEN_METRICS_URLS=http://$IP:2381"
        echo "ETCD_INITIAL_CLUSTER=$CLUSTER"
        echo "ETCD_INITIAL_CLUSTER_TOKEN=blf-$ZONE"
        echo "ETCD_INITIAL_CLUSTER_STATE=new"
        grep -E '^ETCD_(AUTO_COMPACTION_MODE|AUTO_COMPACTION_RETENTION|QUOTA_BACKEND_BYTES|SNAPSHOT_COUNT)=' \
            "$SRC/etc/blf-etcd-member.env.example"
    } > "$etc/etcd-$MEMBER.env"
    install -d -o etcd -g etcd -m 0700 "$ROOT/var/lib/etcd" "$ROOT/var/lib/etcd/blf-$MEMBER"
}

# The units as shipped in etc/, their /etc/blf and /opt/blf paths under PROVISION_ROOT.
install_units() {
    local units="$ROOT/etc/systemd/system"
    install -d -m 0755 "$units"
    for unit in blf-etcd@.service blf-kamailio@.service blfctl-maintain.service blfctl-maintain.timer; do
        sed -e "s|/etc/blf/|$ROOT/etc/blf/|g; s|/opt/blf/|$ROOT/opt/blf/|g; s| /run/blf/| $ROOT/run/blf/|g" \
            "$SRC/etc/$unit" > "$units/$unit"
    done
}

start_services() {
    systemctl_ daemon-reload
    systemctl_ disable --now kamailio.service etcd.service
    # A member of a new cluster is ready (sd_notify) only once a quorum has started: the
    # first host would wait for the others. Started without waiting; the instance retries.
    systemctl_ enable "blf-etcd@$MEMBER.service"
    systemctl_ start --no-block "blf-etcd@$MEMBER.service"
    systemctl_ enable --now memcached.service
    systemctl_ enable --now "blf-kamailio@$INSTANCE.service"
    if [ "$INDEX" = 1 ]; then
        systemctl_ enable --now blfctl-maintain.timer
    fi
}

install_packages
install_project
write_env_files
install_units
start_services
echo "provisioned $INSTANCE ($IP:$SIP_PORT) and etcd member $MEMBER of zone $ZONE"
