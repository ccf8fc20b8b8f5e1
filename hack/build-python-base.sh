#!/usr/bin/env bash
# The Python base of healthnav's images, made from Debian's packages when python:3.11-slim cannot
# be pulled (no registry reachable): Debian bookworm (minbase), python3.11 with venv (its ensurepip
# brings pip into every virtualenv), `python` on PATH, ca-certificates. The Dockerfiles take it as
# PYTHON_IMAGE; they stay the ones users build on python:3.11.x-slim-bookworm.
#
#   hack/build-python-base.sh [REF]        # default localhost/healthnav/python:3.11-bookworm
#
# Needs mmdebstrap and one of buildah (imports into its storage) or a Docker engine (docker
# import). Called by devenv/images.py (`make images`), which rebuilds the image when this file
# changes: the image carries this file's sha256 as the label healthnav.dev/recipe-sha256.
# Environment: BUILDER=buildah|docker (default: docker when `docker info` answers, else buildah),
# DEBIAN_MIRROR, DEBIAN_SECURITY_MIRROR, HEALTHNAV_CACHE (the temporary root tarball goes there).
set -euo pipefail

REF="${1:-localhost/healthnav/python:3.11-bookworm}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
RECIPE_SHA256="$(sha256sum "$HERE/$(basename "${BASH_SOURCE[0]}")" | cut -d' ' -f1)"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
SECURITY_MIRROR="${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}"
CACHE="${HEALTHNAV_CACHE:-$HOME/.cache/healthnav}"
# What python:3.11-slim sets, less its /usr/local Python: Debian's lives in /usr/bin.
IMAGE_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

die() { echo "build-python-base: $*" >&2; exit 1; }
command -v mmdebstrap >/dev/null 2>&1 || die "mmdebstrap is missing: apt-get install -y mmdebstrap (Debian/Ubuntu)"
if [[ -z "${BUILDER:-}" ]]; then
  if docker info >/dev/null 2>&1; then BUILDER=docker; else BUILDER=buildah; fi
fi
command -v "$BUILDER" >/dev/null 2>&1 || die "$BUILDER is missing: apt-get install -y buildah (or start a Docker engine)"

mkdir -p "$CACHE/tmp"
WORK="$(mktemp -d "$CACHE/tmp/python-base.XXXXXX")"
CONTAINER=""
cleanup() {
  if [[ -n "$CONTAINER" ]]; then buildah rm "$CONTAINER" >/dev/null 2>&1 || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

# Docs, man pages and translations are what python:3.11-slim leaves out too (copyrights stay).
# Package lists and apt's cache are removed by mmdebstrap itself.
echo "build-python-base: debootstrapping bookworm from $MIRROR" >&2
mmdebstrap --variant=minbase --quiet \
  --include=python3,python3-venv,python-is-python3,ca-certificates \
  --aptopt='Acquire::Retries "3"' \
  --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  --dpkgopt='path-exclude=/usr/share/info/*' \
  bookworm "$WORK/rootfs.tar" \
  "deb $MIRROR bookworm main" \
  "deb $MIRROR bookworm-updates main" \
  "deb $SECURITY_MIRROR bookworm-security main" \
  || die "mmdebstrap failed: is $MIRROR reachable (DEBIAN_MIRROR to use another mirror)?"

echo "build-python-base: importing as $REF ($BUILDER)" >&2
case "$BUILDER" in
  buildah)
    CONTAINER="$(buildah from scratch)"
    buildah add --quiet "$CONTAINER" "$WORK/rootfs.tar" / >/dev/null
    buildah config --env "PATH=$IMAGE_PATH" --env LANG=C.UTF-8 --cmd python3 \
      --label "healthnav.dev/recipe-sha256=$RECIPE_SHA256" \
      --label org.opencontainers.image.description="Debian bookworm + python3.11 (healthnav local base)" \
      "$CONTAINER"
    buildah commit --quiet --rm "$CONTAINER" "$REF" >/dev/null
    CONTAINER=""
    ;;
  docker)
    docker import --change "ENV PATH=$IMAGE_PATH" --change "ENV LANG=C.UTF-8" \
      --change 'CMD ["python3"]' --change "LABEL healthnav.dev/recipe-sha256=$RECIPE_SHA256" \
      "$WORK/rootfs.tar" "$REF" >/dev/null
    ;;
  *) die "BUILDER must be buildah or docker, not '$BUILDER'" ;;
esac
echo "$REF"
