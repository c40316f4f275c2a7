#!/bin/sh
# Embed the protocol spec in the sidecar as a C++ raw string, so that the
# binary validates with exactly the file the JavaScript side loads.
set -eu
if grep -q ')cbspec"' "$1"; then
    echo "embed-spec: $1 contains the raw-string delimiter" >&2
    exit 1
fi
printf 'namespace chatbridge {\nextern const char *const protocol_spec;\n'
printf 'const char *const protocol_spec = R"cbspec('
cat "$1"
printf ')cbspec";\n}\n'
