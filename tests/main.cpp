// tests/main.cpp: doctest's main, and nothing else, so every test file compiles once and links here.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
