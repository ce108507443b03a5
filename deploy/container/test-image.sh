#!/usr/bin/env bash
# Build the container image (deploy/container/Dockerfile) and smoke-test it as
# Kubernetes would run it. Ends with "image: passed (...)" or
# "image: failed <reason>"; exits non-zero on failure. Run as root (CI does).
#
# No registry is reachable here, so the base image is made locally once
# (.ci/debian-base.sh: a slim Debian 12 from debootstrap, podman import) and
# passed as --build-arg BASE. podman run cannot start containers on these
# machines (crun's setrlimit is refused), so the image's entrypoint is started
# the way a runtime would: in its own PID namespace (it is PID 1, where a
# signal without a handler is ignored), chroot into the image's root mounted
# read-only, as the image's user, with the image's environment; host network,
# so the test reaches it over loopback. Checked: the image's configuration
# (numeric non-root user, exec-form entrypoint, labels), what it must not hold
# (compilers, pip, apt lists), /metrics serving event counters with --demo,
# /-/healthy, no write attempts (twistd's plugin cache), and an exit within 5 s
# of SIGTERM. CADVISOR_EVENTS_BASE_IMAGE names another base image to build on
# (any Debian 12, e.g. a registry mirror's debian:bookworm-slim).
set -euo pipefail
cd "$(dirname "$0")/../.."
base=${CADVISOR_EVENTS_BASE_IMAGE:-localhost/cadvisor-events-base:bookworm}
image=localhost/cadvisor-events:ci
uid=65532
stop_budget=5
started=$(date +%s)

work=$(mktemp -d)
ctr=
runner=
pid=
reported=
failed_line=
trap 'failed_line=$LINENO' ERR
cleanup() {
    local status=$?
    if [ "$status" != 0 ] && [ -z "$reported" ]; then
        echo "image: failed (the step at line ${failed_line:-?} of $0 exited with status $status)"
    fi
    if [ -n "$runner" ] && kill -0 "$runner" 2>/dev/null; then
        # Its namespace's PID 1 first (chroot's change of user clears the
        # parent-death signal that --kill-child sets): the rest goes with it.
        local init
        init=${pid:-$(awk '{ print $1 }' "/proc/$runner/task/$runner/children" 2>/dev/null || true)}
        if [ -n "$init" ]; then kill -KILL "$init" 2>/dev/null || true; fi
        kill -KILL "$runner" 2>/dev/null || true
        wait "$runner" 2>/dev/null || true
    fi
    if [ -n "$ctr" ]; then
        buildah umount "$ctr" >/dev/null 2>&1 || true
        buildah rm "$ctr" >/dev/null 2>&1 || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT
fail() {
    reported=1
    echo "image: failed $*"
    exit 1
}
show() {
    echo "--- $1 (last lines)"
    tail -n "${3:-30}" "$2"
    echo "---"
}

# 1. The base image, made once per machine.
if ! podman image exists "$base"; then
    echo "image: making the base image $base (once per machine)"
    bash .ci/debian-base.sh --slim "$base" || fail "could not make the base image $base"
fi

# 2. Build, with the version from its one place and the commit.
version=$(sed -nE 's/^__version__ = "([^"]+)"$/\1/p' cadvisor_events/__init__.py)
[ -n "$version" ] || fail "no __version__ in cadvisor_events/__init__.py"
revision=$(git rev-parse HEAD 2>/dev/null || true)
podman image exists "$image" && podman rmi --force "$image" >/dev/null
build_start=$(date +%s)
if ! buildah bud --isolation chroot --network host -f deploy/container/Dockerfile \
        --build-arg BASE="$base" --build-arg VERSION="$version" --build-arg REVISION="$revision" \
        -t "$image" . >"$work/build.log" 2>&1; then
    show "buildah bud" "$work/build.log" 40
    fail "buildah bud did not build deploy/container/Dockerfile"
fi
build_seconds=$(( $(date +%s) - build_start ))
echo "image: built $image in ${build_seconds}s"

# 3. Its configuration: what Kubernetes and a runtime read.
podman image inspect "$image" >"$work/inspect.json" || fail "podman image inspect $image"
python3 - "$work/inspect.json" "$uid" "$version" "$work" <<'PY' || fail "image configuration (above)"
import json, sys
inspect, uid, version, work = sys.argv[1:]
config = json.load(open(inspect))[0]["Config"]
problems = []
if config.get("User") not in (f"{uid}:{uid}", uid):
    problems.append(f"user is {config.get('User')!r}, not the numeric {uid}:{uid}")
entrypoint = config.get("Entrypoint") or []
if not entrypoint or not entrypoint[0].startswith("/") or "cadvisor-events" not in entrypoint:
    problems.append(f"entrypoint {entrypoint!r} is not an exec-form twistd cadvisor-events")
labels = config.get("Labels") or {}
for name, want in [("org.opencontainers.image.version", version), ("org.opencontainers.image.licenses", "Apache-2.0")]:
    if labels.get(name) != want:
        problems.append(f"label {name} is {labels.get(name)!r}, not {want!r}")
if "8888/tcp" not in (config.get("ExposedPorts") or {}):
    problems.append("port 8888/tcp not exposed")
for problem in problems:
    print("image:", problem)
# For the run below: the entrypoint, one word a line, and the environment.
with open(f"{work}/entrypoint", "w") as f:
    f.write("".join(word + "\n" for word in entrypoint))
with open(f"{work}/env", "w") as f:
    f.write("".join(line + "\n" for line in config.get("Env") or []))
sys.exit(1 if problems else 0)
PY
mapfile -t entrypoint <"$work/entrypoint"
mapfile -t environment <"$work/env"

# 4. Its contents: the runtime stage only.
ctr=$(buildah from --pull=never "$image") || fail "buildah from $image"
root=$(buildah mount "$ctr") || fail "buildah mount"
for tool in gcc cc c++ g++ clang make pip pip3; do
    if [ -e "$root/usr/bin/$tool" ] || [ -e "$root/opt/cadvisor-events/bin/$tool" ]; then
        fail "the final image holds $tool"
    fi
done
if [ -n "$(ls -A "$root/var/lib/apt/lists" 2>/dev/null)" ]; then fail "the final image holds apt lists"; fi
if [ -e "$root/root/.cache" ]; then fail "the final image holds a cache in /root/.cache"; fi
if ! compgen -G "$root/opt/cadvisor-events/lib/python3*/site-packages/twisted/plugins/dropin.cache" >/dev/null; then
    fail "no twistd plugin cache (dropin.cache) in the image"
fi

# 5. Run the entrypoint with --demo: PID 1, read-only root, the image's user and environment.
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# shellcheck disable=SC2016  # $1 is expanded by the inner shell
unshare --pid --fork --kill-child --mount --propagation private sh -c '
    root=$1; shift
    mount --bind "$root" "$root" && mount -o remount,bind,ro "$root" \
        && mount -t proc proc "$root/proc" && mount --bind /dev "$root/dev" \
        && exec "$@"' sh "$root" \
    env -i "${environment[@]}" "$(command -v chroot)" --userspec="$uid:$uid" "$root" \
    "${entrypoint[@]}" --demo --listen "tcp:$port:interface=127.0.0.1" >"$work/run.log" 2>&1 &
runner=$!

# The process the namespace runs (unshare's child), once it is twistd.
pid=
for _ in $(seq 1 100); do
    child=$(awk '{ print $1 }' "/proc/$runner/task/$runner/children" 2>/dev/null || true)
    if [ -n "$child" ] && tr '\0' ' ' <"/proc/$child/cmdline" 2>/dev/null | grep -q twistd; then
        pid=$child
        break
    fi
    kill -0 "$runner" 2>/dev/null || break
    sleep 0.1
done
[ -n "$pid" ] || { show "run" "$work/run.log"; fail "the entrypoint did not start"; }

# /metrics with event counters (the demo emits a few events a second), /-/healthy.
if ! python3 - "$port" "$version" "$pid" <<'PY'; then
import os, sys, time, urllib.request
port, version, pid = sys.argv[1:]
base = f"http://127.0.0.1:{port}"
deadline, body = time.monotonic() + 60, ""
while time.monotonic() < deadline and os.path.exists(f"/proc/{pid}"):
    try:
        body = urllib.request.urlopen(base + "/metrics", timeout=5).read().decode()
    except OSError:
        body = ""
    counted = [line for line in body.splitlines()
               if line.startswith("cadvisor_container_events_total{") and float(line.rsplit(" ", 1)[1]) > 0]
    if counted:
        break
    time.sleep(0.5)
else:
    sys.exit(f"image: /metrics showed no cadvisor_container_events_total with events ({len(body)} bytes)")
if f'version="{version}"' not in body:
    sys.exit(f"image: /metrics has no cadvisor_events_build_info with version {version}")
try:
    healthy = urllib.request.urlopen(base + "/-/healthy", timeout=5).status
except OSError as e:
    sys.exit(f"image: /-/healthy: {e}")
if healthy != 200:
    sys.exit(f"image: /-/healthy answered {healthy}")
print(f"image: /metrics served {len(counted)} event series (e.g. {counted[0]}); /-/healthy 200")
PY
    show "run" "$work/run.log"
    fail "the demo did not serve (above)"
fi

# Who it runs as, and that it is PID 1 of its namespace.
uids=$(awk '/^Uid:/ { print $2, $3, $4, $5 }' "/proc/$pid/status")
[ "$uids" = "$uid $uid $uid $uid" ] || fail "runs as uids $uids, not $uid"
nspid=$(awk '/^NSpid:/ { print $NF }' "/proc/$pid/status")
[ "$nspid" = 1 ] || fail "twistd is pid $nspid in its namespace, not 1"
echo "image: twistd runs as uid $uid, PID 1 of its namespace, root filesystem read-only"

# 6. SIGTERM: a clean exit within the budget.
stop_start=$(date +%s%N)
kill -TERM "$pid"
stopped=0
for _ in $(seq 1 $(( stop_budget * 20 ))); do
    if ! kill -0 "$runner" 2>/dev/null; then stopped=1; break; fi
    sleep 0.05
done
stop_ms=$(( ($(date +%s%N) - stop_start) / 1000000 ))
if [ "$stopped" != 1 ]; then
    show "run" "$work/run.log"
    fail "still running ${stop_budget}s after SIGTERM"
fi
code=0
wait "$runner" || code=$?
runner=
if [ "$code" != 0 ]; then
    show "run" "$work/run.log"
    fail "exited with status $code after SIGTERM"
fi
echo "image: exited with status 0 ${stop_ms} ms after SIGTERM"

# 7. Nothing tried to write (plugin cache, bytecode) or went wrong.
if grep -nE 'Traceback|plugin cache|dropin\.cache|Read-only file system|Permission denied|Unhandled' "$work/run.log"; then
    show "run" "$work/run.log"
    fail "the run logged the errors above"
fi

size=$(podman image inspect --format '{{.Size}}' "$image")
base_size=$(podman image inspect --format '{{.Size}}' "$base")
echo "image: size $(( size / 1000000 )) MB ($(( (size - base_size) / 1000000 )) MB over the $(( base_size / 1000000 )) MB base)"
reported=1
echo "image: passed ($image, $(( $(date +%s) - started ))s in all)"
