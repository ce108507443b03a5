#!/usr/bin/env bash
# Run README.rst's two Quick start commands, unchanged, inside a fresh Debian 12
# root filesystem (minbase + python3, python3-venv, python3-pip, ca-certificates:
# what README says a machine needs), as a newcomer on a current distribution
# would. Prints one line per command, "fresh-debian: <run|test> passed|failed",
# and exits non-zero when either failed.
#
# The base image is made once per machine with debootstrap (.ci/debian-base.sh)
# and kept in the local container storage (localhost/cadvisor-events-ci:bookworm); each check
# runs in a new working container from it with buildah (chroot isolation, the
# host's network, so loopback and the package registries work as on the host).
set -uo pipefail
cd "$(dirname "$0")/.."
image=localhost/cadvisor-events-ci:bookworm
port=8888
run_command=$(python3 .ci/readme_commands.py run) || exit 2
test_command=$(python3 .ci/readme_commands.py test) || exit 2

if ! podman image exists "$image"; then
    echo "fresh-debian: building the Debian 12 base image (once per machine)"
    bash .ci/debian-base.sh "$image" python3,python3-venv,python3-pip,ca-certificates \
        || { echo "fresh-debian: could not make the base image"; exit 1; }
fi

# A new container with the checkout's files (tracked and new, not ignored: no .venv or .tox).
new_container() {
    local ctr
    ctr=$(buildah from "$image") || return 1
    git ls-files -z --cached --others --exclude-standard \
        | tar --null -T - -c \
        | buildah run --isolation chroot "$ctr" -- sh -c 'mkdir -p /src && tar -x -C /src' || return 1
    # This machine reaches the registries through a TLS proxy with its own CA: give the
    # container the host's trust store and tell pip to use it, as any such site would.
    buildah copy "$ctr" /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt >/dev/null
    local conf
    conf=$(mktemp)
    printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' >"$conf"
    buildah copy "$ctr" "$conf" /etc/pip.conf >/dev/null
    rm -f "$conf"
    echo "$ctr"
}

metrics_have_events() {
    python3 - "$port" <<'PY'
import sys, urllib.request
try:
    body = urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/metrics", timeout=5).read().decode()
except Exception:
    sys.exit(1)
sys.exit(0 if "cadvisor_container_events_total{" in body else 1)
PY
}

failed=0

# 1. Set up and run the service with --demo: /metrics must serve event counters.
ctr=$(new_container) || { echo "fresh-debian: could not make a container"; exit 1; }
log=$(mktemp)
buildah run --isolation chroot --network host "$ctr" -- sh -c "cd /src && $run_command" >"$log" 2>&1 &
runner=$!
served=0
for _ in $(seq 1 300); do
    if metrics_have_events; then served=1; break; fi
    kill -0 "$runner" 2>/dev/null || break
    sleep 1
done
root=$(buildah mount "$ctr")
if [ -f "$root/src/twistd.pid" ]; then kill "$(cat "$root/src/twistd.pid")" 2>/dev/null; fi
wait "$runner" 2>/dev/null
if [ "$served" = 1 ]; then
    echo "fresh-debian: run passed ($run_command: /metrics served event counters)"
else
    tail -n 30 "$log"
    echo "fresh-debian: run failed ($run_command)"
    failed=1
fi
buildah rm "$ctr" >/dev/null
rm -f "$log"

# 2. Set up and run the tests.
ctr=$(new_container) || { echo "fresh-debian: could not make a container"; exit 1; }
log=$(mktemp)
if buildah run --isolation chroot --network host "$ctr" -- sh -c "cd /src && $test_command" >"$log" 2>&1; then
    echo "fresh-debian: test passed ($test_command: $(grep -E '^(PASSED|FAILED) \(' "$log" | tail -n 1))"
else
    tail -n 40 "$log"
    echo "fresh-debian: test failed ($test_command)"
    failed=1
fi
buildah rm "$ctr" >/dev/null
rm -f "$log"
exit "$failed"
