#!/usr/bin/env python3
"""Vulnerability audit of the locked dependencies (uv.lock), with pip-audit and PyPI's data.

    .tools/bin/uv run --frozen --no-sync python scripts/audit_dependencies.py

Exports every locked package (all dependency groups, the project itself left out) with
``uv export``, then runs ``pip-audit --vulnerability-service pypi --no-deps --disable-pip`` on
that file, passing each allow-listed id (security/pip-audit-allowlist.txt) as ``--ignore-vuln``.

Exit status: 0 no finding outside the allow-list; 1 a finding (each printed with its fixed
versions); 2 the audit could not be done (PyPI's vulnerability data unreachable, a package not
audited, pip-audit failing, a malformed or expired allow-list entry). An audit that could not
look a package up never passes: pip-audit itself only warns about those and exits 0.

Standard library only (it must not import mlops_assets): run it with the project's
environment, where pip-audit is a dev dependency.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import ssl
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ALLOWLIST = ROOT / "security" / "pip-audit-allowlist.txt"
PYPI_JSON = "https://pypi.org/pypi/{name}/{version}/json"  # what pip-audit's pypi service reads
#: ``<id>  # <package>: <reason> ... until YYYY-MM-DD``
ENTRY = re.compile(
    r"^(?P<id>[A-Za-z0-9][A-Za-z0-9._:-]+)\s+#\s*(?P<package>[A-Za-z0-9._-]+):\s*(?P<why>.+)$"
)
UNTIL = re.compile(r"\buntil (\d{4}-\d{2}-\d{2})\b")


class AuditError(Exception):
    """The audit could not be done: exit 2 with this message."""


def read_allowlist(path: Path, today: dt.date) -> dict[str, str]:
    """Allow-listed vulnerability id -> its line; every entry names the package, the reason and
    a review date (``until YYYY-MM-DD``) that has not passed."""
    entries: dict[str, str] = {}
    if not path.exists():
        return entries
    problems = []
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = ENTRY.match(line)
        until = UNTIL.search(line)
        if not match or not until:
            problems.append(f"line {number}: expected '<id>  # <package>: <why> until YYYY-MM-DD'")
            continue
        if dt.date.fromisoformat(until.group(1)) < today:
            problems.append(f"line {number}: {match['id']} expired on {until.group(1)}: review it")
            continue
        entries[match["id"]] = line
    if problems:
        raise AuditError(f"{path}:\n  " + "\n  ".join(problems))
    return entries


def find_uv() -> str:
    for candidate in (
        os.environ.get("UV"),
        str(ROOT / ".tools" / "bin" / "uv"),
        shutil.which("uv"),
    ):
        if candidate and Path(candidate).is_file():
            return candidate
    raise AuditError("uv not found (set UV, or run scripts/test once to install .tools/bin/uv)")


def export_lock(uv: str, target: Path) -> list[tuple[str, str]]:
    """Write the locked requirements to ``target``; return their (name, version) pins."""
    command = [uv, "export", "--frozen", "--format", "requirements-txt", "--no-hashes"]
    command += ["--all-groups", "--no-emit-project", "--no-header", "--quiet", "-o", str(target)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise AuditError(f"uv export failed:\n{result.stderr.strip()}")
    pins = re.findall(r"^([A-Za-z0-9._-]+)==([^\s;]+)", target.read_text(), re.MULTILINE)
    if not pins:
        raise AuditError(f"uv export wrote no pinned requirement to {target}")
    return pins


def check_pypi_reachable(name: str, version: str, timeout: float) -> None:
    """Fail fast, and clearly, when PyPI's per-release JSON (its vulnerability data) is not
    reachable: pip-audit would only skip every package with a warning."""
    url = PYPI_JSON.format(name=name, version=version)
    cafile = os.environ.get("SSL_CERT_FILE") or os.environ.get("PIP_CERT")
    context = ssl.create_default_context(
        cafile=cafile if cafile and Path(cafile).exists() else None
    )
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as response:
            body = json.load(response)
    except urllib.error.HTTPError as error:
        raise AuditError(
            f"PyPI's vulnerability data is not reachable: GET {url} answered {error.code} "
            f"(a mirror or proxy without PyPI's per-release JSON API?). Nothing was audited."
        ) from None
    except (OSError, ValueError) as error:
        raise AuditError(
            f"PyPI's vulnerability data is not reachable: GET {url} failed ({error}). "
            "Nothing was audited."
        ) from None
    if "vulnerabilities" not in body:
        raise AuditError(f"GET {url} has no 'vulnerabilities' field: not PyPI's JSON API")


def run_pip_audit(requirements: Path, ignored: list[str], timeout: float) -> dict:
    with tempfile.TemporaryDirectory(prefix="pip-audit-") as tmp:
        report = Path(tmp) / "report.json"
        command = [sys.executable, "-m", "pip_audit", "-r", str(requirements)]
        command += ["--vulnerability-service", "pypi", "--no-deps", "--disable-pip"]
        command += ["--format", "json", "--aliases", "on", "--desc", "off"]
        command += ["--progress-spinner", "off", "--timeout", str(int(timeout)), "-o", str(report)]
        for vuln_id in ignored:
            command += ["--ignore-vuln", vuln_id]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        # pip-audit exits 1 when it finds something; anything else without a report is a failure
        if not report.exists() or result.returncode not in (0, 1):
            raise AuditError(
                f"pip-audit failed (exit {result.returncode}):\n{result.stderr.strip()[-2000:]}"
            )
        return json.loads(report.read_text())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--allowlist", type=Path, default=ALLOWLIST)
    parser.add_argument("--timeout", type=float, default=15.0, help="socket timeout (seconds)")
    args = parser.parse_args(argv)
    try:
        allowed = read_allowlist(args.allowlist, dt.date.today())
        with tempfile.TemporaryDirectory(prefix="audit-lock-") as tmp:
            requirements = Path(tmp) / "requirements.txt"
            pins = export_lock(find_uv(), requirements)
            print(f"==> auditing {len(pins)} locked packages against PyPI's vulnerability data")
            check_pypi_reachable(*next(p for p in pins if p[0] == "pip-audit"), args.timeout)
            report = run_pip_audit(requirements, sorted(allowed), args.timeout)
    except AuditError as error:
        print(f"AUDIT NOT DONE: {error}", file=sys.stderr)
        return 2

    dependencies = report.get("dependencies", [])
    skipped = [d for d in dependencies if d.get("skip_reason")]
    findings = [(d, v) for d in dependencies for v in d.get("vulns", [])]
    for dependency, vuln in findings:
        aliases = ", ".join(vuln.get("aliases", [])) or "-"
        fixes = ", ".join(vuln.get("fix_versions", [])) or "no fixed version"
        print(
            f"VULNERABLE {dependency['name']}=={dependency['version']}: {vuln['id']} "
            f"(aliases {aliases}); fixed in {fixes}"
        )
    if allowed:
        print(f"allow-listed ({args.allowlist.name}): {', '.join(sorted(allowed))}")
    if skipped:
        for dependency in skipped[:10]:
            print(f"NOT AUDITED {dependency['name']}: {dependency['skip_reason']}", file=sys.stderr)
        more = f"NOT AUDITED ... and {len(skipped) - 10} more\n" if len(skipped) > 10 else ""
        print(
            f"{more}AUDIT INCOMPLETE: {len(skipped)} of {len(dependencies)} packages could not "
            "be audited (PyPI's vulnerability data unreachable?); failing, not passing silently",
            file=sys.stderr,
        )
        return 2
    if findings:
        print(
            f"{len(findings)} known vulnerabilities outside the allow-list: raise the pin in "
            f"pyproject.toml and re-lock, or allow-list each with its reason and a review date",
            file=sys.stderr,
        )
        return 1
    print(f"no known vulnerability in {len(dependencies)} locked packages")
    return 0


if __name__ == "__main__":
    sys.exit(main())
