#!/usr/bin/env bash
# Installs over HTTP from real nginx: bytes fetched, requests, wall and CPU
# time of full and update installs, against `curl -o` of the whole bundle
# over the same link and against what RAUC's streaming would fetch — on
# loopback, and through a network namespace whose link loses 1 % of the
# server's packets and carries 50 Mbit/s.
#
#   bench/http-install.sh      (as root: debootstrap once, namespaces; builds --release)
#
# The trees are bench/trees.sh's (Debian 12 minbase, and one release later).
# This machine's kernel has no netem, so the faulty link is made with
# nftables (random drops of the server's packets) and a token bucket (tbf);
# it adds no round-trip delay. A benchmark, not a test: it asserts nothing.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(dirname "$here")
cd "$top"
cargo build --release --bin didymos >/dev/null
didymos=$top/target/release/didymos
read -r v1 v2 < <("$here/trees.sh")
work=$(mktemp -d /var/tmp/didymos-http-bench.XXXXXX)
ns=didymos-bench-$$
cleanup() {
  [ -s "$work/nginx.pid" ] && kill "$(cat "$work/nginx.pid")" 2>/dev/null
  ip link del dbh$$ 2>/dev/null
  ip netns del "$ns" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

# Keys and a device configuration from the demo; its own bundles are not used.
new_device() { # dir
  rm -rf "$1"
  "$didymos" demo "$1" >/dev/null
  sed -i '/^boot-files/d; /^boot-directory/d' "$1/system.conf"
  rm -rf "$1/store" "$1/data" "$1/bootloader.toml"
  : >"$1/cmdline"
}
new_device "$work/keys"
pki=$work/keys/pki
mkdir -p "$work/www"
make_bundle() { # rootfs, output, version
  "$didymos" bundle create --rootfs "$1" --output "$2" --cert "$pki/signing.pem" \
    --key "$pki/signing.key" --intermediate "$pki/intermediate-ca.pem" \
    --compatible didymos-demo --version "$3" >/dev/null
}
make_bundle "$v1" "$work/www/v1.raucb" 10.0
make_bundle "$v2" "$work/www/v2.raucb" 11.0
# RAUC's streaming reads every block of the slot image in the bundle: its
# payload. Estimated as the squashfs RAUC's bundles are (its default gzip
# compression) of the v2 tree, which is what a RAUC bundle of it carries.
mkdir -p "$work/v2-tree"
tar -C "$work/v2-tree" -xf "$v2"
mksquashfs "$work/v2-tree" "$work/v2.squashfs" -comp gzip -quiet -no-progress >/dev/null
rauc_bytes=$(stat -c %s "$work/v2.squashfs")
rm -rf "$work/v2-tree"

nginx_start() { # listen address, [netns]
  mkdir -p "$work/tmp"
  cat >"$work/nginx.conf" <<EOF
daemon on; user root; worker_processes 2; pid $work/nginx.pid; error_log $work/error.log;
events { worker_connections 256; }
http {
  log_format d '\$request|\$status|\$bytes_sent|\$http_range';
  access_log $work/access.log d;
  keepalive_requests 10000;
  client_body_temp_path $work/tmp; proxy_temp_path $work/tmp; fastcgi_temp_path $work/tmp;
  uwsgi_temp_path $work/tmp; scgi_temp_path $work/tmp;
  server { listen $1:18090; root $work/www; }
}
EOF
  ${2:+ip netns exec "$2"} nginx -c "$work/nginx.conf" -e "$work/error.log"
  sleep 0.5
}
nginx_stop() { kill "$(cat "$work/nginx.pid")"; sleep 0.5; }
sent() { awk -F'|' '{ s += $3 } END { print s + 0 }' "$work/access.log"; }
requests() { wc -l <"$work/access.log"; }
mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }

row() { # label, command...
  : >"$work/access.log"
  local label=$1
  shift
  /usr/bin/time -f '%e %U %S' -o "$work/time" "$@" >/dev/null 2>&1
  read -r wall user sys <"$work/time"
  printf '| %s | %s MiB | %s | %s s | %s s |\n' "$label" "$(mib "$(sent)")" "$(requests)" \
    "$wall" "$(awk -v u="$user" -v s="$sys" 'BEGIN { printf "%.2f", u + s }')"
}

suite() { # base URL, link description
  local url=$1 link=$2
  echo
  echo "**$link**"
  echo
  echo "| what | bytes fetched | requests | wall | CPU (user + sys) |"
  echo "|---|---|---|---|---|"
  new_device "$work/dev"
  cp "$pki/root-ca.pem" "$work/dev/pki/root-ca.pem"
  row "didymos: full install of v1 (empty device)" \
    "$didymos" --conf "$work/dev/system.conf" install --direct "$url/v1.raucb"
  echo 'didymos.slot=A' >"$work/dev/cmdline"
  "$didymos" --conf "$work/dev/system.conf" status mark-good --direct >/dev/null
  row "didymos: v2 over v1 (fetches what v1 lacks)" \
    "$didymos" --conf "$work/dev/system.conf" install --direct "$url/v2.raucb"
  row "curl -o of the whole v2 bundle" curl -sf -o "$work/curl.out" "$url/v2.raucb"
  echo "| RAUC streaming of v2 (estimated: its slot image, a gzip squashfs) | $(mib "$rauc_bytes") MiB | | | |"
}

echo "v1 bundle $(mib "$(stat -c %s "$work/www/v1.raucb")") MiB, v2 bundle $(mib "$(stat -c %s "$work/www/v2.raucb")") MiB"
nginx_start 127.0.0.1
suite http://127.0.0.1:18090 "loopback"
nginx_stop

ip netns add "$ns"
ip link add dbh$$ type veth peer name dbn$$
ip link set dbn$$ netns "$ns"
ip addr add 10.78.0.1/24 dev dbh$$
ip link set dbh$$ up
ip -n "$ns" addr add 10.78.0.2/24 dev dbn$$
ip -n "$ns" link set dbn$$ up
ip -n "$ns" link set lo up
ip netns exec "$ns" nft add table inet faults
ip netns exec "$ns" nft 'add chain inet faults out { type filter hook output priority 0; }'
ip netns exec "$ns" nft 'add rule inet faults out numgen random mod 100 < 1 drop'
ip netns exec "$ns" tc qdisc replace dev dbn$$ root tbf rate 50mbit burst 64kbit latency 400ms
nginx_start 10.78.0.2 "$ns"
suite http://10.78.0.2:18090 "50 Mbit/s, 1 % of the server's packets lost (nftables, tbf)"
nginx_stop
echo
grep -m1 -o 'sha_ni' /proc/cpuinfo >/dev/null && echo "sha_ni: yes" || echo "sha_ni: no"
