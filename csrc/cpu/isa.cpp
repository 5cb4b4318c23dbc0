// isa.cpp — CPUID-based detection of AVX2/AVX-512 and the active kernel variant.
#include "isa.h"

#include <atomic>
#include <cstdlib>
#include <stdexcept>

#if defined(__x86_64__) || defined(_M_X64)
#include <cpuid.h>
#define PYLIN_X86 1
#endif

namespace pylin {
namespace {

#if PYLIN_X86
unsigned long long read_xcr0() {
    unsigned int eax, edx;
    __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
    return ((unsigned long long)edx << 32) | eax;
}

bool cpu_has_avx2() {
    unsigned int a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return false;
    const bool osxsave = c & (1u << 27), fma = c & (1u << 12), f16c = c & (1u << 29);
    if (!osxsave || !fma || !f16c) return false;
    if ((read_xcr0() & 0x6) != 0x6) return false;  // OS saves XMM and YMM state
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
    return b & (1u << 5);
}

bool cpu_has_avx512() {
    unsigned int a, b, c, d;
    if (!cpu_has_avx2()) return false;
    if ((read_xcr0() & 0xe6) != 0xe6) return false;  // opmask and ZMM state
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
    const bool f = b & (1u << 16), dq = b & (1u << 17), bw = b & (1u << 30), vl = b & (1u << 31);
    return f && dq && bw && vl;
}
#else
bool cpu_has_avx2() { return false; }
bool cpu_has_avx512() { return false; }
#endif

Isa parse(const std::string& name) {
    if (name == "generic") return Isa::Generic;
    if (name == "avx2") return Isa::Avx2;
    if (name == "avx512") return Isa::Avx512;
    throw std::invalid_argument("unknown ISA variant '" + name + "' (expected generic, avx2, avx512 or auto)");
}

Isa initial_isa() {
    const char* env = std::getenv("PYLIN_ISA");
    if (env == nullptr || std::string(env).empty() || std::string(env) == "auto") return best_isa();
    Isa requested;
    try {
        requested = parse(env);  // a bad value fails the import: better than silently ignoring it
    } catch (const std::invalid_argument& e) {
        throw std::invalid_argument(std::string("PYLIN_ISA=") + env + ": " + e.what());
    }
    if (!isa_supported(requested))
        throw std::invalid_argument(std::string("PYLIN_ISA=") + env + " is not supported on this CPU/build");
    return requested;
}

std::atomic<int>& active_slot() {
    static std::atomic<int> slot{(int)initial_isa()};
    return slot;
}

}  // namespace

const char* isa_name(Isa isa) {
    switch (isa) {
        case Isa::Avx2: return "avx2";
        case Isa::Avx512: return "avx512";
        default: return "generic";
    }
}

bool isa_supported(Isa isa) {
    switch (isa) {
        case Isa::Generic: return true;
#ifdef PYLIN_HAVE_AVX2
        case Isa::Avx2: return cpu_has_avx2();
#endif
#ifdef PYLIN_HAVE_AVX512
        case Isa::Avx512: return cpu_has_avx512();
#endif
        default: return false;
    }
}

std::vector<std::string> supported_isas() {
    std::vector<std::string> out;
    for (Isa isa : {Isa::Generic, Isa::Avx2, Isa::Avx512})
        if (isa_supported(isa)) out.push_back(isa_name(isa));
    return out;
}

Isa best_isa() {
    if (isa_supported(Isa::Avx512)) return Isa::Avx512;
    if (isa_supported(Isa::Avx2)) return Isa::Avx2;
    return Isa::Generic;
}

Isa active_isa() { return (Isa)active_slot().load(); }

void set_active_isa(const std::string& name) {
    Isa isa = (name == "auto") ? best_isa() : parse(name);
    if (!isa_supported(isa))
        throw std::invalid_argument("ISA variant '" + name + "' is not supported on this CPU or was not compiled in");
    active_slot().store((int)isa);
}

}  // namespace pylin
