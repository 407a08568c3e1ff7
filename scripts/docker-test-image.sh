#!/usr/bin/env bash
# Builds the tiny image the Docker tests run their containers from, offline: the engine here
# has no registry, so nothing can be pulled. The image is Debian's statically linked busybox
# with a few applet links, piped as a tar into `docker import`. Idempotent: an image that
# exists already is kept. Prints nothing but a skip note when the engine cannot be reached
# (the tests then say why they skip, or fail under CI).
set -euo pipefail
image="${CWBACKUP_TEST_IMAGE:-cwbackup-test/busybox:1}"

if ! command -v docker >/dev/null; then
    echo "docker-test-image: no docker CLI; the Docker tests will skip (or fail under CI)" >&2
    exit 0
fi
if ! docker version --format '{{.Server.Version}}' >/dev/null 2>&1; then
    echo "docker-test-image: the Docker engine cannot be reached; the Docker tests will skip (or fail under CI)" >&2
    exit 0
fi
if docker image inspect "$image" >/dev/null 2>&1; then
    exit 0
fi

busybox=/bin/busybox
if ! "$busybox" --help >/dev/null 2>&1 || ldd "$busybox" >/dev/null 2>&1; then
    # Not there, or the dynamically linked flavour (it needs libc inside the image).
    apt-get update -qq && apt-get install -y -qq busybox-static
fi
if ldd "$busybox" >/dev/null 2>&1; then
    echo "docker-test-image: $busybox is not statically linked" >&2
    exit 1
fi

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/bin" "$root/tmp" "$root/data"
chmod 1777 "$root/tmp"
cp "$busybox" "$root/bin/busybox"
for applet in sh sleep date cat echo ls true kill; do
    ln -s busybox "$root/bin/$applet"
done
tar -C "$root" --numeric-owner --owner=0 --group=0 -cf - . |
    docker import --change 'ENV PATH=/bin' --change 'CMD ["/bin/sh"]' - "$image" >/dev/null
echo "docker-test-image: built $image" >&2
