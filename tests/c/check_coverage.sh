#!/usr/bin/env bash
# Proves that tests/c/null_params.c calls every function include/herald.h declares (so a new
# export cannot ship without its NULL-argument cases), and, when the library is built, that it
# exports no herald_* function the header does not declare.
#
# Usage: bash tests/c/check_coverage.sh   (HERALD_LIB_DIR: the library's folder, default target/debug;
# CC: the C compiler used to strip comments, default cc). Exit 0 when covered, 1 otherwise.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
header="$root/include/herald.h"
test_file="$root/tests/c/null_params.c"
lib_dir="${HERALD_LIB_DIR:-$root/target/debug}"
cc="${CC:-cc}"

# Function names: identifiers followed by `(` in the header with comments and directives
# resolved by the preprocessor (doc comments mention functions too; the callback typedef's name is
# followed by `)`, not `(`).
declared="$("$cc" -E -P -x c "$header" | grep -oE '\bherald_[a-z0-9_]+[[:space:]]*\(' | sed -E 's/[[:space:]]*\($//' | sort -u)"
count="$(printf '%s\n' "$declared" | grep -c . || true)"
# (Here-strings, not `printf | grep -q`: grep -q exits at the first match, and with pipefail the
# printf's SIGPIPE would count as "not found".)
if [ "$count" -lt 1 ] || ! grep -qx 'herald_version' <<<"$declared"; then
    echo "check_coverage: could not read the function list from $header" >&2
    exit 1
fi

# The test with comments removed but macros kept, so a name in a comment does not count as a call.
calls="$("$cc" -fpreprocessed -dD -E -P -x c "$test_file")"

missing=()
for name in $declared; do
    if ! grep -qE "\\b${name}[[:space:]]*\\(" <<<"$calls"; then
        missing+=("$name")
    fi
done

status=0
if [ "${#missing[@]}" -gt 0 ]; then
    echo "check_coverage: these functions of include/herald.h are never called in tests/c/null_params.c:" >&2
    printf '  %s\n' "${missing[@]}" >&2
    status=1
fi

# Exports the header does not declare (the Rust test also catches a stale header; this checks the
# very library the C tests ran against).
library="$lib_dir/libherald.so"
if [ -e "$library" ] && command -v nm >/dev/null 2>&1; then
    exported="$(nm -D --defined-only "$library" | awk '$2 == "T" && $3 ~ /^herald_/ { print $3 }' | sort -u)"
    undeclared="$(comm -23 <(printf '%s\n' "$exported") <(printf '%s\n' "$declared"))"
    if [ -n "$undeclared" ]; then
        echo "check_coverage: $library exports functions include/herald.h does not declare:" >&2
        printf '  %s\n' $undeclared >&2
        status=1
    fi
    unexported="$(comm -13 <(printf '%s\n' "$exported") <(printf '%s\n' "$declared"))"
    if [ -n "$unexported" ]; then
        echo "check_coverage: include/herald.h declares functions $library does not export:" >&2
        printf '  %s\n' $unexported >&2
        status=1
    fi
fi

if [ "$status" -eq 0 ]; then
    echo "check_coverage: all $count functions of include/herald.h are called in tests/c/null_params.c"
fi
exit "$status"
