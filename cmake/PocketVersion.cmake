# Regenerates core's pocket/version.h with the current git revision, at build time (script mode).
# Run by the pocket_version target (core/CMakeLists.txt) on every build; configure_file() rewrites the
# header only when its text changes, so a build without a new commit recompiles nothing.
#   cmake [-DGIT_EXECUTABLE=git] -DSOURCE_DIR=<repo> -DINPUT=<version.h.in> -DOUTPUT=<version.h> -DPROJECT_VERSION=<x.y.z> -P PocketVersion.cmake
foreach(var SOURCE_DIR INPUT OUTPUT PROJECT_VERSION)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "PocketVersion.cmake: -D${var}=... is required")
  endif()
endforeach()
if(NOT GIT_EXECUTABLE)
  set(GIT_EXECUTABLE git)
endif()
execute_process(COMMAND ${GIT_EXECUTABLE} rev-parse --short HEAD WORKING_DIRECTORY ${SOURCE_DIR}
                OUTPUT_VARIABLE POCKET_GIT_REVISION OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
if(NOT POCKET_GIT_REVISION)
  set(POCKET_GIT_REVISION unknown)
endif()
configure_file(${INPUT} ${OUTPUT} @ONLY)
