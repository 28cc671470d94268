"""Subprocess entry: ``python -m hidiff.profiling.worker SPEC_JSON CASE`` measures one case.

The result is printed as one line ``HIDIFF_PROFILE_CASE {json}`` so that other
output (warnings, logs) never corrupts it.
"""
from __future__ import annotations

import json
import sys

from hidiff.profiling.profiler import RESULT_MARK, ProfileSpec, measure_case


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m hidiff.profiling.worker SPEC_JSON CASE", file=sys.stderr)
        return 2
    result = measure_case(ProfileSpec.from_json(args[0]), args[1])
    print(RESULT_MARK + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
