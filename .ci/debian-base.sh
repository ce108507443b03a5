#!/usr/bin/env bash
# Make a Debian 12 (bookworm) base image in the local container storage, for
# machines that cannot pull one from a registry:
#
#     bash .ci/debian-base.sh [--slim] IMAGE [PACKAGE,PACKAGE...]
#
# debootstrap's minbase (what the official debian:bookworm-slim image is made
# from) plus the given packages, imported with podman. --slim also does what
# makes the official image "slim": dpkg told to leave out documentation, man
# pages and translations (of what is there and of anything installed later),
# so an image built on it measures what it would on debian:bookworm-slim.
#
# This site's settings go in, as a site's own base image would carry them: the
# host's Debian apt sources (so apt-get in a build uses the same mirror and
# suites) and the host's CA certificates (this machine reaches the package
# registries through a TLS proxy with its own CA; Debian's apt and pip trust
# the system store). .ci/fresh-debian.sh and deploy/container/test-image.sh
# call it only when IMAGE does not exist yet, so it runs once per machine.
set -euo pipefail
slim=0
if [ "${1:-}" = --slim ]; then
    slim=1
    shift
fi
image=${1:?usage: debian-base.sh [--slim] IMAGE [PACKAGE,PACKAGE...]}
include=${2:-}
mirror=http://deb.debian.org/debian

rootfs=$(mktemp -d)
[ -n "$rootfs" ] && [ "$rootfs" != / ] || exit 1
trap 'rm -rf "$rootfs" "$rootfs.log"' EXIT
if ! debootstrap --variant=minbase ${include:+--include="$include"} \
        bookworm "$rootfs" "$mirror" >"$rootfs.log" 2>&1; then
    tail -n 20 "$rootfs.log"
    echo "debian-base: debootstrap of bookworm for $image failed" >&2
    exit 1
fi

# The host's Debian sources replace debootstrap's one-line sources.list when
# the host runs Debian 12 too (the only case where they fit).
host_sources=/etc/apt/sources.list.d/debian.sources
if [ -f "$host_sources" ] && grep -q '^Suites:.*bookworm' "$host_sources"; then
    cp "$host_sources" "$rootfs/etc/apt/sources.list.d/debian.sources"
    rm -f "$rootfs/etc/apt/sources.list"
fi
# The host's local CAs go where update-ca-certificates (run whenever a build
# installs ca-certificates) picks them up; the host's bundle replaces the
# image's when the image has one already.
if compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null; then
    mkdir -p "$rootfs/usr/local/share/ca-certificates"
    cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/"
fi
if [ -f "$rootfs/etc/ssl/certs/ca-certificates.crt" ] && [ -f /etc/ssl/certs/ca-certificates.crt ]; then
    cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
fi

if [ "$slim" = 1 ]; then
    # The official slim image's dpkg filter (debuerreotype's "slimify") for
    # packages installed later, and the same paths removed from what is there.
    printf '%s\n' \
        'path-exclude /usr/share/doc/*' \
        'path-include /usr/share/doc/*/copyright' \
        'path-exclude /usr/share/groff/*' \
        'path-exclude /usr/share/info/*' \
        'path-exclude /usr/share/linda/*' \
        'path-exclude /usr/share/lintian/overrides/*' \
        'path-exclude /usr/share/locale/*' \
        'path-include /usr/share/locale/locale.alias' \
        'path-exclude /usr/share/man/*' \
        >"$rootfs/etc/dpkg/dpkg.cfg.d/docker"
    share="$rootfs/usr/share"
    find "$share/doc" -mindepth 1 -not -type d -not -name copyright -delete
    find "$share/doc" -mindepth 1 -type d -empty -delete
    find "$share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} +
    for dir in groff info linda lintian/overrides man; do
        if [ -d "$share/$dir" ]; then
            find "$share/$dir" -mindepth 1 -delete
        fi
    done
fi
# No package lists or downloaded packages in the base: a build fetches its own.
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/archives/*.deb

tar -C "$rootfs" -c . | podman import --quiet - "$image" >/dev/null
echo "debian-base: made $image"
