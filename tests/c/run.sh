#!/usr/bin/env bash
# Proves the C ABI from real C and C++ compilers: builds examples/c/quickstart.c (C11),
# tests/c/null_params.c (C11) and examples/cpp/quickstart.cpp (C++17) with -Wall -Wextra -Werror
# under AddressSanitizer (with LeakSanitizer) and UndefinedBehaviorSanitizer against the built
# library, runs them, checks that null_params.c calls every function of include/herald.h, checks
# that the headers compile on their own, and links quickstart.c once through a generated
# herald.pc (`cc quickstart.c $(pkg-config --cflags --libs herald)`) and once statically. With
# cmake installed it also builds the examples through ffi/cmake/HeraldConfig.cmake.
#
# Usage, from anywhere:  bash tests/c/run.sh
#   HERALD_LIB_DIR   folder with libherald.so / libherald.a (default: target/debug); it is not built here
#   CC, CXX          compilers (default gcc, g++)
#   HERALD_SKIP_STATIC=1, HERALD_SKIP_CMAKE=1   skip the static link or the CMake build
# Exits non-zero on the first failure.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
lib_dir="${HERALD_LIB_DIR:-$root/target/debug}"
if [ ! -d "$lib_dir" ] || [ ! -e "$lib_dir/libherald.so" ]; then
    echo "run.sh: no libherald.so in $lib_dir; build it with \`cargo build -p herald-ffi\` or set HERALD_LIB_DIR" >&2
    exit 1
fi
lib_dir="$(cd "$lib_dir" && pwd)"
cc="${CC:-gcc}"
cxx="${CXX:-g++}"
export CC="$cc" HERALD_LIB_DIR="$lib_dir"

build="$(mktemp -d "${TMPDIR:-/tmp}/herald-c-tests.XXXXXX")"
declare -A builds=() # background builds: name -> pid
cleanup() {
    # Stop this script's own background builds still running after a failure, then remove them.
    local pid
    for pid in "${builds[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    rm -rf "$build"
}
trap cleanup EXIT

started=$SECONDS
step() { printf '\n== [%ss] %s\n' "$((SECONDS - started))" "$*"; }
fail() {
    echo "run.sh: FAILED: $*" >&2
    exit 1
}

# Every program bounds its own waits; this is the backstop for a hang inside the library.
run_bounded() {
    if command -v timeout >/dev/null 2>&1; then
        timeout --kill-after=5 60 "$@"
    else
        "$@"
    fi
}

warnings=(-Wall -Wextra -Werror)
sanitize=(-fsanitize=address,undefined -fno-omit-frame-pointer -g)
link_shared=(-L"$lib_dir" -Wl,-rpath,"$lib_dir" -lherald -lpthread -ldl -lm)
# Leaks are errors; UB stops the program (it only warns by default).
export ASAN_OPTIONS="detect_leaks=1:halt_on_error=1:abort_on_error=0"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"

step "headers compile on their own ($cc, $cxx)"
printf '#include "herald.h"\nint main(void) { return herald_version() == 0; }\n' >"$build/h.c"
for std in c99 c11 c17; do
    "$cc" -std="$std" -Wpedantic "${warnings[@]}" -Iinclude -c "$build/h.c" -o "$build/h_$std.o" || fail "herald.h as $std"
done
printf '#include "herald.hpp"\nint main() { return herald::version().empty(); }\n' >"$build/hpp.cpp"
"$cxx" -std=c++17 -Wpedantic "${warnings[@]}" -Iinclude -c "$build/hpp.cpp" -o "$build/hpp.o" || fail "herald.hpp as C++17"
printf '#include "herald.h"\nint main() { return herald_version() == nullptr; }\n' >"$build/h.cpp"
"$cxx" -std=c++11 -Wpedantic "${warnings[@]}" -Iinclude -c "$build/h.cpp" -o "$build/h_cpp.o" || fail "herald.h as C++11"

# Builds run in the background, in parallel (the static link of the debug archive is the slowest);
# each logs to $build/<name>.log, shown if it fails.
build_in_background() {
    local name="$1"
    shift
    "$@" >"$build/$name.log" 2>&1 &
    builds[$name]=$!
}
wait_for_build() {
    local pid="${builds[$1]}"
    unset "builds[$1]" # reaped: cleanup must not signal its (possibly reused) pid
    wait "$pid" || { cat "$build/$1.log" >&2; fail "build $1"; }
}

step "build with sanitizers against $lib_dir"
build_in_background quickstart_c "$cc" -std=c11 "${warnings[@]}" "${sanitize[@]}" -Iinclude examples/c/quickstart.c \
    "${link_shared[@]}" -o "$build/quickstart_c"
build_in_background null_params "$cc" -std=c11 "${warnings[@]}" "${sanitize[@]}" -Iinclude tests/c/null_params.c \
    "${link_shared[@]}" -o "$build/null_params"
build_in_background quickstart_cpp "$cxx" -std=c++17 "${warnings[@]}" "${sanitize[@]}" -Iinclude \
    examples/cpp/quickstart.cpp "${link_shared[@]}" -o "$build/quickstart_cpp"
static=0
if [ "${HERALD_SKIP_STATIC:-0}" != 1 ] && [ -e "$lib_dir/libherald.a" ]; then
    static=1
    # The static link takes the .pc's Libs.private; the .pc is generated below, so the same flags
    # are checked against it there.
    build_in_background quickstart_static "$cc" -std=c11 "${warnings[@]}" -Iinclude examples/c/quickstart.c \
        "$lib_dir/libherald.a" -lpthread -ldl -lm -o "$build/quickstart_static"
fi
for name in quickstart_c null_params quickstart_cpp; do
    wait_for_build "$name"
done

for program in quickstart_c null_params quickstart_cpp; do
    step "run $program"
    run_bounded "$build/$program" || fail "$program exited with status $?"
done

step "every function of include/herald.h is called in tests/c/null_params.c"
bash tests/c/check_coverage.sh || fail "coverage"

step "pkg-config: cc quickstart.c \$(pkg-config --cflags --libs herald)"
command -v pkg-config >/dev/null 2>&1 || fail "pkg-config is not installed"
version="$(awk '/^#define HERALD_VERSION_(MAJOR|MINOR|PATCH) / { v = v (v == "" ? "" : ".") $3 } END { print v }' include/herald.h)"
mkdir -p "$build/pkgconfig"
sed -e "s|@PREFIX@|$root|g" -e "s|@LIBDIR@|$lib_dir|g" -e "s|@INCLUDEDIR@|$root/include|g" -e "s|@VERSION@|$version|g" \
    ffi/herald.pc.in >"$build/pkgconfig/herald.pc"
export PKG_CONFIG_PATH="$build/pkgconfig"
pkg-config --exists --print-errors "herald = $version" || fail "the generated herald.pc"
echo "herald $(pkg-config --modversion herald): $(pkg-config --cflags --libs herald)"
# shellcheck disable=SC2046 # the flags are meant to split
"$cc" examples/c/quickstart.c $(pkg-config --cflags --libs herald) -o "$build/quickstart_pkg" ||
    fail "build through pkg-config"
# A .pc carries no rpath: the loader is told where the library is.
LD_LIBRARY_PATH="$lib_dir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" run_bounded "$build/quickstart_pkg" >/dev/null ||
    fail "quickstart built through pkg-config"
echo "ok"

if [ "$static" = 1 ]; then
    step "static: quickstart.c with libherald.a and the .pc's Libs.private"
    private="$(pkg-config --static --libs-only-l herald | sed -e 's/-lherald//' -e 's/^ *//' -e 's/ *$//')"
    [ "$private" = "-lpthread -ldl -lm" ] || fail "herald.pc's Libs.private is \"$private\", the static build used -lpthread -ldl -lm"
    wait_for_build quickstart_static
    run_bounded "$build/quickstart_static" >/dev/null || fail "statically linked quickstart"
    echo "ok ($private)"
fi

if [ "${HERALD_SKIP_CMAKE:-0}" != 1 ] && command -v cmake >/dev/null 2>&1; then
    step "cmake: examples/cpp/CMakeLists.txt with find_package(Herald) from ffi/cmake"
    cmake -S examples/cpp -B "$build/cmake" -DHerald_DIR="$root/ffi/cmake" -DHERALD_LIB_DIR="$lib_dir" \
        -DCMAKE_C_COMPILER="$cc" -DCMAKE_CXX_COMPILER="$cxx" >"$build/cmake.log" 2>&1 ||
        { cat "$build/cmake.log"; fail "cmake configure"; }
    cmake --build "$build/cmake" -j 4 >>"$build/cmake.log" 2>&1 || { cat "$build/cmake.log"; fail "cmake build"; }
    (cd "$build/cmake" && ctest --output-on-failure --timeout 60) || fail "ctest"
fi

printf '\nrun.sh: all passed in %ss\n' "$((SECONDS - started))"
