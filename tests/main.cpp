// The doctest runner, and nothing else (doctest recommends keeping main in its own file).
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
