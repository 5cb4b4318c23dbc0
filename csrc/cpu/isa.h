// isa.h — which CPU kernel variant runs: detected from CPUID, forceable.
//
// The variants are compiled from per-file flags (see CMakeLists.txt); this
// picks the best one the running CPU supports, or the one named by
// PYLIN_ISA=generic|avx2|avx512 / pylin.kernels.set_isa().  Tests:
// tests/test_matmul.py runs every variant available here.
#pragma once

#include <string>
#include <vector>

namespace pylin {

enum class Isa { Generic = 0, Avx2 = 1, Avx512 = 2 };

const char* isa_name(Isa isa);
bool isa_supported(Isa isa);         // CPU and OS support it, and it was compiled in
std::vector<std::string> supported_isas();
Isa best_isa();
Isa active_isa();
void set_active_isa(const std::string& name);  // throws std::invalid_argument

}  // namespace pylin
