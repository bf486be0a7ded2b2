# Herald's CMake package. `find_package(Herald CONFIG REQUIRED)` defines the imported target
# Herald::herald: include/herald.h and include/herald.hpp, and libherald (shared by default;
# static with -DHERALD_USE_STATIC_LIBS=ON, which adds the threads, dl and m it needs).
#
# Where it looks, first match wins:
#   - HERALD_LIB_DIR (cache variable, else the environment variable) for the library;
#   - the repository this file lives in (ffi/cmake): include/, target/debug, target/release;
#   - an install prefix laid out as <prefix>/lib/cmake/Herald: <prefix>/include, <prefix>/lib.
# Use from the repository: cmake -S examples/cpp -B build -DHerald_DIR=$PWD/ffi/cmake
#
# Sets Herald_FOUND, Herald_VERSION (from herald.h), HERALD_INCLUDE_DIR and HERALD_LIBRARY.

include(CMakeFindDependencyMacro)
find_dependency(Threads)

get_filename_component(_herald_here "${CMAKE_CURRENT_LIST_DIR}" REALPATH)
get_filename_component(_herald_repo "${_herald_here}/../.." ABSOLUTE)
get_filename_component(_herald_prefix "${_herald_here}/../../.." ABSOLUTE)

if(NOT DEFINED HERALD_LIB_DIR AND DEFINED ENV{HERALD_LIB_DIR})
  set(HERALD_LIB_DIR "$ENV{HERALD_LIB_DIR}")
endif()
set(HERALD_LIB_DIR "${HERALD_LIB_DIR}" CACHE PATH "The folder holding libherald (default: found by HeraldConfig.cmake)")
option(HERALD_USE_STATIC_LIBS "Link libherald.a instead of the shared library" OFF)

find_path(HERALD_INCLUDE_DIR herald.h
  HINTS "${_herald_repo}/include" "${_herald_prefix}/include"
  NO_DEFAULT_PATH)
if(HERALD_USE_STATIC_LIBS)
  set(_herald_names libherald.a)
else()
  set(_herald_names libherald.so libherald.dylib herald)
endif()
find_library(HERALD_LIBRARY NAMES ${_herald_names}
  HINTS ${HERALD_LIB_DIR} "${_herald_repo}/target/debug" "${_herald_repo}/target/release" "${_herald_prefix}/lib"
  NO_DEFAULT_PATH)

if(NOT HERALD_INCLUDE_DIR OR NOT HERALD_LIBRARY)
  set(Herald_FOUND FALSE)
  set(Herald_NOT_FOUND_MESSAGE
    "herald.h (${HERALD_INCLUDE_DIR}) or libherald (${HERALD_LIBRARY}) not found; build it with `cargo build -p herald-ffi` or set HERALD_LIB_DIR")
  return()
endif()

# The version comes from the header, the one place it is generated.
file(STRINGS "${HERALD_INCLUDE_DIR}/herald.h" _herald_version_lines REGEX "^#define HERALD_VERSION_(MAJOR|MINOR|PATCH) ")
foreach(_herald_part MAJOR MINOR PATCH)
  string(REGEX REPLACE ".*#define HERALD_VERSION_${_herald_part} ([0-9]+).*" "\\1" _herald_${_herald_part} "${_herald_version_lines}")
endforeach()
set(Herald_VERSION "${_herald_MAJOR}.${_herald_MINOR}.${_herald_PATCH}")

if(NOT TARGET Herald::herald)
  if(HERALD_USE_STATIC_LIBS)
    add_library(Herald::herald STATIC IMPORTED)
    set_target_properties(Herald::herald PROPERTIES
      INTERFACE_LINK_LIBRARIES "Threads::Threads;${CMAKE_DL_LIBS};m")
  else()
    add_library(Herald::herald SHARED IMPORTED)
    # cargo's cdylib has no SONAME: link it as -L<dir> -lherald, not by its path.
    set_target_properties(Herald::herald PROPERTIES IMPORTED_NO_SONAME TRUE)
  endif()
  set_target_properties(Herald::herald PROPERTIES
    IMPORTED_LOCATION "${HERALD_LIBRARY}"
    INTERFACE_INCLUDE_DIRECTORIES "${HERALD_INCLUDE_DIR}"
    INTERFACE_COMPILE_FEATURES "c_std_99")
endif()

set(Herald_FOUND TRUE)
unset(_herald_here)
unset(_herald_repo)
unset(_herald_prefix)
unset(_herald_names)
unset(_herald_version_lines)
