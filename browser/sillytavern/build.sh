#!/bin/sh
# The SillyTavern extension as a folder of its own, to copy into
# SillyTavern/data/<user>/extensions/ (make puts it in build/sillytavern/;
# the Debian package in /usr/share/chatbridge/sillytavern/): this folder's
# files, plus the shared protocol client beside index.js.
#
#   browser/sillytavern/build.sh OUT_DIR
set -eu

here=$(cd "$(dirname "$0")" && pwd)
out=${1:?usage: build.sh OUT_DIR}
from="import '../common/cb-protocol.js';"
to="import './cb-protocol.js';"

[ "$(grep -c -F -x "$from" "$here/index.js")" = 1 ] || {
    echo "build.sh: index.js must import the protocol client exactly once" \
         "as: $from" >&2
    exit 1
}

tmp="$out.tmp.$$"
rm -rf "$tmp"
mkdir -p "$tmp"
for f in manifest.json settings.html style.css README.md; do
    cp "$here/$f" "$tmp/$f"
done
cp "$here/../common/cb-protocol.js" "$tmp/cb-protocol.js"
sed "s|^$from\$|$to|" "$here/index.js" > "$tmp/index.js"
rm -rf "$out"
mv "$tmp" "$out"
