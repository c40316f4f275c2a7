#!/usr/bin/env bash
# make deb: the two Debian packages, from a release build.
#
#   packaging/build-deb.sh BUILD_DIR OUT_DIR
#
# BUILD_DIR holds nginx/ngx_http_chatbridge_module.so, chatbridge-sidecar and
# chatbridge.user.js (make deb builds them with dpkg-buildflags and no
# sanitizer).  OUT_DIR gets, built with plain dpkg-deb --root-owner-group:
#
#   libnginx-mod-http-chatbridge_VERSION_ARCH.deb   the module, like Debian's
#                                                   libnginx-mod-* packages
#   chatbridge-sidecar_VERSION_ARCH.deb             the daemon, its systemd
#                                                   unit, config and user
#
# VERSION is the file VERSION plus a Debian revision (DEB_REVISION, 1).  The
# module depends on the nginx-abi-* that nginx-dev names, so it installs only
# next to the nginx it was built for.  Maintainer: DEBFULLNAME, DEBEMAIL.

set -euo pipefail

die() { echo "build-deb: $*" >&2; exit 1; }

[ $# -eq 2 ] || die "usage: $0 BUILD_DIR OUT_DIR"

top=$(cd "$(dirname "$0")/.." && pwd)
pkg=$top/packaging
bld=$(realpath "$1")
out=$(realpath -m "$2")
src=${NGINX_SRC:-/usr/share/nginx/src}

module=$bld/nginx/ngx_http_chatbridge_module.so
sidecar=$bld/chatbridge-sidecar
userscript=$bld/chatbridge.user.js
extension=$bld/sillytavern

for f in "$module" "$sidecar" "$userscript" "$extension/index.js"; do
    [ -s "$f" ] || die "$f is missing (make deb builds it)"
done
# (objdump's output in full first: grep -q stops reading at the first
# match, and under pipefail the writer's SIGPIPE would fail the test)
needed=$(objdump -p "$module" "$sidecar") \
    || die "objdump cannot read $module or $sidecar"
if grep -qE 'NEEDED +lib(a|ub|t|l)san' <<< "$needed"; then
    die "$bld is a sanitizer build; packages need a release build"
fi

upstream=$(tr -d ' \n' < "$top/VERSION")
[[ "$upstream" =~ ^[0-9][0-9A-Za-z.+~]*$ ]] \
    || die "VERSION: \"$upstream\" is not an upstream version"
version=$upstream-${DEB_REVISION:-1}
arch=$(dpkg --print-architecture)
maintainer="${DEBFULLNAME:-chatbridge authors}"
maintainer+=" <${DEBEMAIL:-chatbridge@example.org}>"
case "$maintainer" in
    *$'\n'*|*$'\r'*) die "DEBFULLNAME and DEBEMAIL must be one line" ;;
esac

# TEXT as the replacement of a sed s|||: \, & and the delimiter | quoted
sed_repl() {
    printf '%s' "$1" | sed -e 's/[\\&|]/\\&/g'
}

abi=$(sed -n 's/^nginx:abi=//p' "$src/debian/libnginx-mod.abisubstvars" \
      2>/dev/null || true)
[ -n "$abi" ] || die "no nginx:abi in $src/debian/libnginx-mod.abisubstvars" \
                     "(is nginx-dev installed?)"

# one timestamp for file dates, changelogs and the man page: the last
# commit's, so that the same tree gives the same packages
if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
    SOURCE_DATE_EPOCH=$(git -C "$top" log -1 --format=%ct 2>/dev/null \
                        || date +%s)
fi
export SOURCE_DATE_EPOCH
date_r=$(LC_ALL=C date -u -R -d "@$SOURCE_DATE_EPOCH")
year=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y)
first=$(git -C "$top" log --reverse --format=%cd --date=format:%Y \
        2>/dev/null | sed -n 1p || true)
years=${first:-$year}
[ "$years" = "$year" ] || years="$years-$year"

umask 022
work=$out/work
rm -rf "$work"
mkdir -p "$work/debian"
# dpkg-shlibdeps reads debian/control and expects the packages' trees in
# debian/<package>/, as in a source package
printf 'Source: chatbridge\n\nPackage: %s\nArchitecture: any\n\n' \
       libnginx-mod-http-chatbridge > "$work/debian/control"
printf 'Package: %s\nArchitecture: any\n' chatbridge-sidecar \
       >> "$work/debian/control"

# the Depends that the ELF files' NEEDED entries call for (of a file in
# debian/<package>/, which needs its DEBIAN/ to be recognised)
shlibs() {
    (cd "$work" && dpkg-shlibdeps -O "$@") | sed -n 's/^shlibs:Depends=//p'
}

# copyright, changelog.Debian.gz, README.Debian, lintian's overrides
docs() {
    local name=$1 dir=$2
    local doc=$dir/usr/share/doc/$name
    install -d "$doc"
    sed "s|@YEARS@|$(sed_repl "$years")|" "$pkg/copyright" > "$doc/copyright"
    install -m 644 "$pkg/README.Debian" "$doc/"
    install -D -m 644 "$pkg/lintian-overrides" \
            "$dir/usr/share/lintian/overrides/$name"
    {
        echo "$name ($version) unstable; urgency=medium"
        echo
        echo "  * chatbridge $upstream, packaged from its source tree by"
        echo "    make deb."
        echo
        echo " -- $maintainer  $date_r"
    } | gzip -9n > "$doc/changelog.Debian.gz"
}

# strip as dh_strip does
strip_to() {
    local mode=$1 from=$2 to=$3
    install -d "$(dirname "$to")"
    if [ "$mode" = lib ]; then
        strip --remove-section=.comment --remove-section=.note \
              --strip-unneeded -o "$to" "$from"
        chmod 644 "$to"
    else
        strip --remove-section=.comment --remove-section=.note \
              -o "$to" "$from"
        chmod 755 "$to"
    fi
}

# control (from packaging/NAME/control), md5sums, maintainer scripts, the
# archive
build() {
    local name=$1 dir=$2 tmpl=$3 shl=$4
    local size

    install -d -m 755 "$dir/DEBIAN"
    for s in postinst prerm postrm; do
        if [ -f "$tmpl/$s" ]; then
            install -m 755 "$tmpl/$s" "$dir/DEBIAN/$s"
        fi
    done
    if [ -f "$tmpl/conffiles" ]; then
        cat "$tmpl/conffiles" >> "$dir/DEBIAN/conffiles"
    fi
    if [ -f "$dir/DEBIAN/conffiles" ]; then
        chmod 644 "$dir/DEBIAN/conffiles"
    fi

    (cd "$dir" && find . -type f ! -path './DEBIAN/*' -printf '%P\n' \
        | LC_ALL=C sort | while read -r f; do
            if [ -f DEBIAN/conffiles ] && grep -qxF "/$f" DEBIAN/conffiles
            then
                continue
            fi
            md5sum "$f"
        done) > "$dir/DEBIAN/md5sums"
    chmod 644 "$dir/DEBIAN/md5sums"

    size=$(du -sk --exclude=DEBIAN "$dir" | cut -f1)
    sed -e "s|@VERSION@|$(sed_repl "$version")|g" \
        -e "s|@ARCH@|$(sed_repl "$arch")|g" \
        -e "s|@MAINTAINER@|$(sed_repl "$maintainer")|g" \
        -e "s|@SIZE@|$(sed_repl "$size")|g" \
        -e "s|@NGINX_ABI@|$(sed_repl "$abi")|g" \
        -e "s|@SHLIBS@|$(sed_repl "$shl")|g" \
        "$tmpl/control" > "$dir/DEBIAN/control"
    chmod 644 "$dir/DEBIAN/control"

    find "$dir" -type d -exec chmod 755 {} +
    rm -f "$out/${name}_${version}_${arch}.deb"
    dpkg-deb --build --root-owner-group -Zxz "$dir" \
             "$out/${name}_${version}_${arch}.deb" >/dev/null
    echo "$out/${name}_${version}_${arch}.deb"
}

# the sidecar's man page, from its --help (the option table)
manpage() {
    local up=${upstream//-/\\-}
    cat <<MAN
.TH CHATBRIDGE\\-SIDECAR 8 "$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%d)" \
"chatbridge $up" "System Administration"
.SH NAME
chatbridge\\-sidecar \\- browser connections for the chatbridge nginx module
.SH SYNOPSIS
.B chatbridge\\-sidecar
[\\fB\\-\\-config\\fR \\fIFILE\\fR] [\\fB\\-\\-\\fR\\fIOPTION VALUE\\fR ...]
.SH DESCRIPTION
.B chatbridge\\-sidecar
owns the WebSocket connections of the browsers that answer chatbridge's
OpenAI\\-compatible API, and hands their work to the nginx workers through
shared memory.  nginx's workers connect to its control socket
(\\fBchatbridge_sidecar\\fR in nginx, \\fB\\-\\-control\\fR here).
.PP
Options come from the JSON object in \\fB\\-\\-config\\fR \\fIFILE\\fR (its
keys are the option names with _ for \\-, its values strings or numbers),
then from the command line, which overrides the file.
.SH OPTIONS
MAN
    "$sidecar" --help | awk '
        function roff(s) {
            gsub(/\\/, "\\e", s); gsub(/-/, "\\-", s); return s
        }
        /^  --/ {
            name = $1; sub(/^--/, "", name)
            def = $0; sub(/^  --[^ ]*/, "", def); sub(/^ /, "", def)
            printf ".TP\n.B \\-\\-%s\n", roff(name)
            pending = def
            next
        }
        /^      / && name != "" {
            line = $0; sub(/^ +/, "", line)
            print roff(line)
            if (pending != "") {
                sub(/^\(/, "", pending); sub(/\)$/, "", pending)
                printf ".br\nDefault: %s\n", roff(pending)
                pending = ""
            }
        }'
    local listen
    listen=$(sed -n 's/^ *"listen": *"\([^"]*\)".*/\1/p' \
             "$pkg/sidecar/sidecar.conf")
    [ -n "$listen" ] || die "packaging/sidecar/sidecar.conf has no listen"
    cat <<'MAN'
.SH FILES
.TP
.I /etc/chatbridge/sidecar.conf
the options the service starts with
.TP
.I /etc/chatbridge/browser\-token
the token browsers present, made when the package is installed
.TP
.I /run/chatbridge/
the control socket nginx's workers connect to (\fBcontrol\fR)
MAN
    cat <<MAN
.TP
.I $listen
where the browsers' WebSocket connections arrive (TCP), passed on by nginx
(\\fBlisten\\fR; /etc/chatbridge/nginx/chatbridge\\-ws.conf)
MAN
    cat <<'MAN'
.TP
.I /var/lib/chatbridge/
LMArena Bridge files that captures may update (\fBstate_dir\fR)
.SH SEE ALSO
.BR nginx (8),
/usr/share/doc/chatbridge\-sidecar/README.Debian
MAN
}

# --- libnginx-mod-http-chatbridge

name=libnginx-mod-http-chatbridge
dir=$work/debian/$name
install -d "$dir/DEBIAN"
strip_to lib "$module" "$dir/usr/lib/nginx/modules/${module##*/}"
install -D -m 644 "$pkg/module/mod-http-chatbridge.conf" \
        "$dir/usr/share/nginx/modules-available/mod-http-chatbridge.conf"
install -D -m 644 "$userscript" "$dir/usr/share/chatbridge/chatbridge.user.js"
# the SillyTavern extension, a folder to copy into SillyTavern
install -d "$dir/usr/share/chatbridge/sillytavern"
install -m 644 "$extension"/* "$dir/usr/share/chatbridge/sillytavern/"
# nginx-conf/: every file as an example; the snippets the examples include
# from /etc/chatbridge/nginx/ there too, as conffiles, so that the examples
# work as written
install -d "$dir/usr/share/chatbridge/nginx" "$dir/etc/chatbridge/nginx"
install -m 644 "$top"/nginx-conf/*.conf "$dir/usr/share/chatbridge/nginx/"
sed -n 's|^ *include /etc/chatbridge/nginx/\([^;]*\);.*|\1|p' \
    "$top"/nginx-conf/*.conf | LC_ALL=C sort -u | while read -r f; do
    [ -f "$top/nginx-conf/$f" ] \
        || die "nginx-conf/ includes /etc/chatbridge/nginx/$f, not there"
    install -m 644 "$top/nginx-conf/$f" "$dir/etc/chatbridge/nginx/"
    echo "/etc/chatbridge/nginx/$f" >> "$dir/DEBIAN/conffiles"
done
docs "$name" "$dir"
build "$name" "$dir" "$pkg/module" \
      "$(shlibs -e"debian/$name/usr/lib/nginx/modules/${module##*/}")"

# --- chatbridge-sidecar

name=chatbridge-sidecar
dir=$work/debian/$name
install -d "$dir/DEBIAN"
strip_to bin "$sidecar" "$dir/usr/sbin/chatbridge-sidecar"
install -D -m 644 "$pkg/sidecar/chatbridge-sidecar.service" \
        "$dir/lib/systemd/system/chatbridge-sidecar.service"
install -D -m 644 "$pkg/sidecar/sidecar.conf" "$dir/etc/chatbridge/sidecar.conf"
install -d "$dir/usr/share/man/man8"
manpage | gzip -9n > "$dir/usr/share/man/man8/chatbridge-sidecar.8.gz"
docs "$name" "$dir"
build "$name" "$dir" "$pkg/sidecar" \
      "$(shlibs -e"debian/$name/usr/sbin/chatbridge-sidecar")"
