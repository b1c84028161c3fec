r"""The release checks plugins.qgis.org runs on an uploaded zip, run here the same way (``make package``).

The site (github.com/qgis/QGIS-Plugins-Website, ``qgis-app/plugins/security_scanner.py``) extracts the zip into a
temporary folder and runs, with its enabled rules (``qgis-app/plugins/management/commands/data/bandit_rules.json``
and ``secrets_rules.json``)::

    bandit -r FOLDER -f json --quiet -t <enabled Bandit rules>
    detect-secrets scan --all-files --exclude-files 'metadata\.txt' --exclude-files '\.secrets\.baseline'
                        --disable-plugin <disabled detectors> .          (in FOLDER)

Any Bandit result or any detect-secrets result marks the version BLOCKED (``qgis-app/plugins/tasks/
run_security_scan.py``: both checks are "critical"). Findings accepted inline (``# nosec Bxxx``, ``# pragma:
allowlist secret``) are not results; they are listed apart, with the rules ``scripts/release_checks.ini`` justifies.

Usage: ``python scripts/release_checks.py ZIP``: prints the findings, exit status 1 where the site would block.
"""

import configparser
import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

CONFIG = Path(__file__).resolve().parent / "release_checks.ini"
#: The site's enabled Bandit rules (bandit_rules.json, "enabled": true; as of QGIS-Plugins-Website 73c20fa, 2026-07).
#: B111 and B320 are no longer in Bandit 1.9, which says so and runs the rest.
BANDIT_RULES = (
    "B101,B102,B103,B104,B105,B106,B107,B108,B110,B111,B112,B113,B201,B202,B301,B302,B303,B304,B305,B306,B307,"
    "B308,B310,B311,B312,B313,B314,B315,B316,B317,B318,B319,B320,B321,B323,B324,B401,B402,B403,B405,B406,B407,"
    "B408,B409,B412,B413,B501,B502,B503,B504,B505,B506,B507,B508,B509,B601,B602,B603,B604,B605,B606,B607,B608,"
    "B609,B610,B611,B612,B613,B614,B615,B701,B702,B703,B704")
#: The site's only disabled detect-secrets detector (secrets_rules.json); every other one runs.
SECRETS_DISABLED = ("IPPublicDetector",)
#: detect-secrets' filter that honours ``# pragma: allowlist secret``.
ALLOWLIST_FILTER = "detect_secrets.filters.allowlist.is_line_allowlisted"


class CheckError(Exception):
    """A tool did not run or did not answer in JSON: the zip was not checked."""


def _tool(module, *arguments, cwd=None):
    """JSON output of ``python -m module arguments`` (the tools of this Python's venv, as pinned in
    requirements/dev.txt). Raises CheckError if it is missing or fails."""
    try:
        done = subprocess.run([sys.executable, "-m", module, *arguments], cwd=cwd, capture_output=True,
                              text=True, timeout=600)
    except subprocess.TimeoutExpired:
        raise CheckError(f"{module} took more than 10 minutes") from None
    if done.returncode not in (0, 1) or not done.stdout.strip():
        raise CheckError(f"{module} failed (exit status {done.returncode}); is requirements/dev.txt installed "
                         f"('make setup')?\n{done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout)


def bandit(folder, ignore_nosec=False):
    """[(rule, 'path:line', text)] of Bandit run as the site runs it on ``folder``; with ``ignore_nosec`` also the
    findings accepted inline. Raises CheckError when a file could not be parsed (it would go unchecked)."""
    report = _tool("bandit", "-r", str(folder), "-f", "json", "--quiet", "-t", BANDIT_RULES,
                   *(["--ignore-nosec"] if ignore_nosec else []))
    if report["errors"]:
        raise CheckError(f"Bandit could not check {report['errors']}")
    return sorted((r["test_id"], f"{Path(r['filename']).relative_to(folder)}:{r['line_number']}", r["issue_text"])
                  for r in report["results"])


def detect_secrets(folder, ignore_allowlist=False):
    """[(detector, 'path:line')] of detect-secrets run as the site runs it in ``folder`` (detector: the site's rule
    name, e.g. HexHighEntropyString); with ``ignore_allowlist`` also those accepted inline (``# pragma: allowlist
    secret``). (Its own ``--only-allowlisted`` fails on an empty file in detect-secrets 1.5.0.)"""
    arguments = ["scan", "--all-files", "--exclude-files", r"metadata\.txt", "--exclude-files",
                 r"\.secrets\.baseline", *[a for name in SECRETS_DISABLED for a in ("--disable-plugin", name)]]
    if ignore_allowlist:
        arguments += ["--disable-filter", ALLOWLIST_FILTER]
    report = _tool("detect_secrets", *arguments, ".", cwd=folder)
    from detect_secrets.core.plugins.util import get_mapping_from_secret_type_to_class
    detector = {kind: plugin.__name__ for kind, plugin in get_mapping_from_secret_type_to_class().items()}
    return sorted((detector[s["type"]], f"{path}:{s['line_number']}") for path, found in report["results"].items()
                  for s in found)


def accepted_rules():
    """{'bandit': {rule: justification}, 'detect-secrets': {detector: justification}} from release_checks.ini."""
    config = configparser.ConfigParser(interpolation=None)
    config.optionxform = str  # rule names keep their case
    config.read(CONFIG, encoding="utf-8")
    return {section: dict(config[section]) for section in ("bandit", "detect-secrets")}


def check(zip_path):
    """Both checks on the contents of ``zip_path``, as the site runs them: {'blocking': [findings],
    'accepted': {'bandit': {rule}, 'detect-secrets': {detector}}} (what is accepted inline)."""
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        with zipfile.ZipFile(zip_path) as archive:
            archive.extractall(folder)
        blocking = bandit(folder) + detect_secrets(folder)
        inline = {"bandit": set(bandit(folder, ignore_nosec=True)) - set(blocking),
                  "detect-secrets": set(detect_secrets(folder, ignore_allowlist=True)) - set(blocking)}
    return {"blocking": blocking, "accepted": {tool: {f[0] for f in found} for tool, found in inline.items()}}


def main(zip_path):
    try:
        result = check(zip_path)
    except CheckError as error:
        raise SystemExit(f"Release checks not run: {error}") from None
    justified = accepted_rules()
    unjustified = [f"{tool} {rule}" for tool, rules in result["accepted"].items() for rule in sorted(rules)
                   if not justified[tool].get(rule, "").strip()]
    for finding in result["blocking"]:
        print("BLOCKING", *finding)
    for item in unjustified:
        print(f"ACCEPTED INLINE WITHOUT A JUSTIFICATION in {CONFIG.name}:", item)
    if result["blocking"] or unjustified:
        raise SystemExit(f"{zip_path}: plugins.qgis.org would block this release (Bandit/detect-secrets).")
    print(f"{zip_path}: Bandit and detect-secrets pass as plugins.qgis.org runs them; accepted inline:",
          ", ".join(sorted(result["accepted"]["bandit"] | result["accepted"]["detect-secrets"])) or "nothing")


if __name__ == "__main__":
    main(sys.argv[1])
