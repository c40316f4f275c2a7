#!/usr/bin/env bash
# Configure the dynamic module against Debian's nginx-dev, with Debian's own
# configure flags, so that /usr/sbin/nginx loads it (same binary signature).
#
#   util/configure-module.sh BUILD_DIR [EXTRA_CFLAGS] [EXTRA_LDFLAGS]
#
# Configure writes only into BUILD_DIR; the build is then
#   make -f BUILD_DIR/Makefile -C /usr/share/nginx/src modules

set -euo pipefail

bld=$(realpath -m "$1")
extra_cflags=${2:-}
extra_ldflags=${3:-}
src=${NGINX_SRC:-/usr/share/nginx/src}
top=$(cd "$(dirname "$0")/.." && pwd)

if [ ! -f "$src/conf_flags" ]; then
    echo "configure-module: $src/conf_flags not found; is nginx-dev installed?" >&2
    exit 1
fi

mkdir -p "$bld"
cd "$src"
# shellcheck disable=SC1091
. ./conf_flags

cflags="$(dpkg-buildflags --get CFLAGS) -fPIC $(dpkg-buildflags --get CPPFLAGS)"
ldflags="$(dpkg-buildflags --get LDFLAGS) -fPIC"

./configure --with-cc-opt="$cflags $extra_cflags" \
            --with-ld-opt="$ldflags $extra_ldflags" \
            "${NGX_CONF_FLAGS[@]}" \
            --add-dynamic-module="$top" \
            --builddir="$bld" > "$bld/configure.log" 2>&1 || {
    tail -30 "$bld/configure.log" >&2
    exit 1
}
