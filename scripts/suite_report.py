"""Where the test suite's time goes, per test file, from the JUnit report scripts/test writes
(`.pytest-artifacts/junit.xml`; each test's time includes its setup and teardown, so a file's
total is about its wall time on its worker).

Usage: `.tools/bin/uv run --frozen --no-sync python scripts/suite_report.py [REPORT] [--top N]`.
The slowest files belong, in this order, in `SLOWEST_FILES` of mlops_assets_tests/conftest.py.
"""

from __future__ import annotations

import argparse
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def file_seconds(report: Path) -> tuple[Counter[str], Counter[str]]:
    """(seconds, tests) per test file of a JUnit report."""
    seconds: Counter[str] = Counter()
    tests: Counter[str] = Counter()
    for case in ET.parse(report).getroot().iter("testcase"):
        name = case.get("classname", "").split(".")[-1] + ".py"
        seconds[name] += float(case.get("time") or 0.0)
        tests[name] += 1
    return seconds, tests


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", nargs="?", default=ROOT / ".pytest-artifacts" / "junit.xml")
    parser.add_argument("--top", type=int, default=25, help="files to list")
    args = parser.parse_args()
    report = Path(args.report)
    if not report.is_file():
        raise SystemExit(f"no JUnit report at {report}: run ./scripts/test first")
    seconds, tests = file_seconds(report)
    total = sum(seconds.values())
    print(f"{'seconds':>8} {'share':>6} {'tests':>6}  file")
    for name, value in seconds.most_common(args.top):
        print(f"{value:8.1f} {value / total:6.1%} {tests[name]:6d}  {name}")
    print(
        f"{total:8.1f} {1:6.0%} {sum(tests.values()):6d}  all {len(seconds)} files (both workers)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
