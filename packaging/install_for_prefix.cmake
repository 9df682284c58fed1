# Install-time part of packaging/CMakeLists.txt, run by `cmake --install` and by cpack: the
# files whose place or content depend on the prefix actually installed to, which is known only
# now (cpack installs to /usr whatever the build was configured with).
#   the unit's ExecStart=     <prefix>/bin/ackxfer-fast
#   the settings file         /etc/default/ackxfer-fast for the prefix /usr, else
#                             <prefix>/etc/default/ackxfer-fast (the GNUInstallDirs rule)
# Expects ACKXFER_PACKAGING_SOURCE_DIR and ACKXFER_PACKAGING_BINARY_DIR.
if(CMAKE_INSTALL_PREFIX STREQUAL "/usr")
  set(sysconfdir "/etc")
else()
  set(sysconfdir "${CMAKE_INSTALL_PREFIX}/etc")
endif()

set(unit_source "${ACKXFER_PACKAGING_SOURCE_DIR}/systemd/ackxfer-fast-recv.service")
file(READ "${unit_source}" unit)
foreach(path "ExecStart=/usr/bin/ackxfer-fast" "EnvironmentFile=-/etc/default/ackxfer-fast")
  string(FIND "${unit}" "${path}" found)
  if(found EQUAL -1)
    message(FATAL_ERROR "${unit_source} has no '${path}' to adapt to the prefix")
  endif()
endforeach()
string(REPLACE "/usr/bin/ackxfer-fast" "${CMAKE_INSTALL_PREFIX}/bin/ackxfer-fast" unit "${unit}")
string(REPLACE "/etc/default/ackxfer-fast" "${sysconfdir}/default/ackxfer-fast" unit "${unit}")
set(unit_for_prefix "${ACKXFER_PACKAGING_BINARY_DIR}/ackxfer-fast-recv.service")
file(WRITE "${unit_for_prefix}" "${unit}")

# file(INSTALL) honours DESTDIR and records each file in install_manifest.txt.
file(INSTALL DESTINATION "${CMAKE_INSTALL_PREFIX}/lib/systemd/system" TYPE FILE
     FILES "${unit_for_prefix}")
file(INSTALL DESTINATION "${sysconfdir}/default" TYPE FILE
     FILES "${ACKXFER_PACKAGING_SOURCE_DIR}/default/ackxfer-fast")
