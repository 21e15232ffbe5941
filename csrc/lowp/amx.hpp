// Whether the AMX tile paths may run: the CPU has the tiles (and the bf16 / int8 forms), the
// OS saves their state (XCR0 bits 17 and 18), and on Linux the process has been granted the
// tile data (arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA), asked once; the kernel
// refuses it when, say, an alternate signal stack is too small for the larger signal frame).
// A refusal makes the paths unsupported: the products then run on the next path down.
// DENSEKIT_AMX=0 (or off, false, no) keeps the state unasked for and the paths unsupported.
#pragma once

#include <string>

namespace densekit::lowp {

struct AmxSupport {
  bool bf16 = false;   // tdpbf16ps usable
  bool int8 = false;   // tdpbusd usable
  std::string note;    // why not, when the CPU has AMX but it is unusable or switched off by
                       // DENSEKIT_AMX (or a DENSEKIT_AMX value not understood); "" otherwise
};

const AmxSupport& amx_support();

}  // namespace densekit::lowp
