"""
Turn trial's closing line into the plain "N passed, N failed" line CI reads,
and exit non-zero when anything failed or nothing ran.
"""

import re
import sys


def main(path: str) -> int:
    text = open(path, encoding="utf-8", errors="replace").read()
    match = None
    for match in re.finditer(r"^(PASSED|FAILED) \((.*)\)\s*$", text, re.M):
        pass
    if match is None:
        print("0 passed, 1 failed")
        print("trial did not report a result", file=sys.stderr)
        return 1
    counts = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", match.group(2))}
    passed = counts.get("successes", 0)
    failed = counts.get("failures", 0) + counts.get("errors", 0) + counts.get("unexpectedSuccesses", 0)
    skipped = counts.get("skips", 0)
    print(f"{passed} passed, {failed} failed, {skipped} skipped")
    return 0 if (match.group(1) == "PASSED" and passed > 0) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
