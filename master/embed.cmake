# Writes OUT, a C++ file defining taskmaster::NAME (a std::string_view) with the bytes of IN.
# Run by CMake at build time (cmake -DIN=... -DOUT=... -DNAME=... -P embed.cmake).
file(READ "${IN}" content)
string(FIND "${content}" ")tmdash\"" bad)
if(NOT bad EQUAL -1)
  message(FATAL_ERROR "${IN} contains the raw string's delimiter )tmdash\"")
endif()
file(WRITE "${OUT}.tmp" "// Generated from ${IN} by master/embed.cmake: do not edit.\n#include <string_view>\nnamespace taskmaster {\nextern const std::string_view ${NAME};\nconst std::string_view ${NAME} = R\"tmdash(${content})tmdash\";\n}  // namespace taskmaster\n")
file(COPY_FILE "${OUT}.tmp" "${OUT}" ONLY_IF_DIFFERENT)
file(REMOVE "${OUT}.tmp")
