#!/usr/bin/env python3
"""Rewrites the guide of src/core/dgauss_cdt.h from the cumulative table in
the same file: guide[b] is the first entry greater than b * 2^(64 - BITS).
usage: scripts/gen-dgauss-guide.py [BITS]   (default 12)"""
import re
import sys

path = "src/core/dgauss_cdt.h"
bits = int(sys.argv[1]) if len(sys.argv) > 1 else 12
text = open(path).read()
start = text.index("static const uint64_t tlm_dgauss16_cdt")
table = text[start:text.index("};", start)]
cdt = [int(v, 16) for v in re.findall(r"0x([0-9A-Fa-f]{16})ull", table)]
n = len(cdt)
guide = []
for b in range(1 << bits):
    edge = b << (64 - bits)
    guide.append(next((i for i, c in enumerate(cdt) if c > edge), n))
guide.append(n)
g0 = text.index("/* Guide to the table:")
body = ",\n".join(
    "    " + ", ".join("%du" % g for g in guide[i:i + 16]) for i in range(0, len(guide), 16))
guide_text = (
    "/* Guide to the table: tlm_dgauss16_guide[b] is the first entry greater than\n"
    " * b * 2^%d, so a draw u in [b 2^%d, (b+1) 2^%d) has its answer between\n"
    " * guide[b] and guide[b + 1] (derived from the table above by\n"
    " * scripts/gen-dgauss-guide.py; test_dp checks it against the table). */\n"
    "#define TLM_DGAUSS16_GUIDE_BITS %du\n"
    "static const uint16_t tlm_dgauss16_guide[(1u << TLM_DGAUSS16_GUIDE_BITS) + 1u] = {\n%s\n};\n\n#endif\n"
    % (64 - bits, 64 - bits, 64 - bits, bits, body))
open(path, "w").write(text[:g0] + guide_text)
