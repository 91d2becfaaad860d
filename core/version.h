#pragma once
namespace gantry {
// The library's version ("0.1.0"), as configured by CMake.
const char* version();
}  // namespace gantry
