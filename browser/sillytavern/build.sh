#!/bin/sh
# The SillyTavern extension as a folder of its own, to copy into
# SillyTavern/data/<user>/extensions/ (make puts it in build/sillytavern/;
# the Debian package in /usr/share/chatbridge/sillytavern/): this folder's
# files, plus the shared protocol client beside index.js.
#
#   browser/sillytavern/build.sh OUT_DIR
#
# Checks: index.js imports the protocol client exactly once (the line this
# rewrites), its VERSION is manifest.json's version, and the folder made
# holds every file manifest.json names. OUT_DIR is replaced whole, or not
# touched when a check fails.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
out=${1:?usage: build.sh OUT_DIR}
out=${out%/}        # dist/ and dist are one folder: its temp copy goes beside it
from="import '../common/cb-protocol.js';"
to="import './cb-protocol.js';"
tmp=

cleanup() {
    [ -z "$tmp" ] || rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

die() {
    echo "build.sh: $*" >&2
    exit 1
}

[ "$(grep -c -F -x "$from" "$here/index.js" || true)" = 1 ] \
    || die "index.js must import the protocol client exactly once as: $from"

# manifest.json's "key": "value" (one line each, as the file is written)
manifest() {
    sed -n "s/^[[:space:]]*\"$1\"[[:space:]]*:[[:space:]]*\"\([^\"]*\)\".*/\1/p" \
        "$here/manifest.json"
}
version=$(manifest version)
case $version in
    '' | *"
"*) die "manifest.json has no single \"version\"" ;;
esac
grep -q -F -x "const VERSION = '$version';" "$here/index.js" \
    || die "index.js VERSION is not manifest.json's version $version"

tmp="$out.tmp.$$"
rm -rf "$tmp"
mkdir -p "$tmp"
for f in manifest.json settings.html style.css README.md; do
    cp "$here/$f" "$tmp/$f"
done
cp "$here/../common/cb-protocol.js" "$tmp/cb-protocol.js"
sed "s|^$from\$|$to|" "$here/index.js" > "$tmp/index.js"

[ "$(grep -c -F -x "$to" "$tmp/index.js" || true)" = 1 ] \
    || die "the import in index.js was not rewritten"
js=$(manifest js)
[ -n "$js" ] || die "manifest.json has no \"js\""
css=$(manifest css)
for f in "$js" ${css:+"$css"} cb-protocol.js settings.html; do
    [ -s "$tmp/$f" ] \
        || die "the extension folder would lack $f (manifest.json or index.js needs it)"
done

rm -rf "$out"
mv "$tmp" "$out"
tmp=
