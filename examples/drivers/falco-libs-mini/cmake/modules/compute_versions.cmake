# Small stand-in for falcosecurity/libs' compute_versions.cmake.
# compute_versions(<file>...) reads each "<major>.<minor>.<patch>" version file
# (path relative to the calling CMakeLists.txt) and sets, in the caller's scope,
# <NAME> plus <NAME>_MAJOR/_MINOR/_PATCH, where NAME is the file's basename.
function(compute_versions)
	foreach(name IN LISTS ARGN)
		set(file "${CMAKE_CURRENT_SOURCE_DIR}/${name}")
		if(NOT EXISTS "${file}")
			message(FATAL_ERROR "compute_versions: missing ${file}")
		endif()
		file(STRINGS "${file}" ver LIMIT_COUNT 1)
		string(STRIP "${ver}" ver)
		if(NOT ver MATCHES "^([0-9]+)\\.([0-9]+)\\.([0-9]+)$")
			message(FATAL_ERROR "compute_versions: bad version '${ver}' in ${file}")
		endif()
		set(${name} "${ver}" PARENT_SCOPE)
		set(${name}_MAJOR "${CMAKE_MATCH_1}" PARENT_SCOPE)
		set(${name}_MINOR "${CMAKE_MATCH_2}" PARENT_SCOPE)
		set(${name}_PATCH "${CMAKE_MATCH_3}" PARENT_SCOPE)
		# re-run cmake if the version file changes
		set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS "${file}")
	endforeach()
endfunction()
