r"""The release checks plugins.qgis.org runs on an uploaded zip, run here the same way (``make package``).

The site (github.com/qgis/QGIS-Plugins-Website, ``qgis-app/plugins/security_scanner.py``) extracts the zip into a
temporary folder and runs, with its enabled rules (``qgis-app/plugins/management/commands/data/bandit_rules.json``
and ``secrets_rules.json``)::

    bandit -r FOLDER -f json --quiet -t <enabled Bandit rules>
    detect-secrets scan --all-files --exclude-files 'metadata\.txt' --exclude-files '\.secrets\.baseline'
                        [--baseline <the zip's .secrets.baseline>] --disable-plugin <disabled detectors> .   (in FOLDER)

Any Bandit result or any detect-secrets result marks the version BLOCKED (``qgis-app/plugins/tasks/
run_security_scan.py``: both checks are "critical").

Accepted findings: Bandit's on their line (``# nosec Bxxx``); detect-secrets' in the zip's ``.secrets.baseline``
(JSON files cannot carry a comment). Here a finding blocks unless it is in that baseline, as the site documents;
the site's own run with ``--baseline`` prints nothing and so passes whatever it finds. Each accepted rule is
justified in ``scripts/release_checks.ini``, one line each.

Usage: ``python scripts/release_checks.py ZIP``: prints the findings, exit status 1 where the site would block;
``python scripts/release_checks.py ZIP --baseline``: writes the zip's detect-secrets findings to .secrets.baseline
(review each one before committing it).
"""

import configparser
import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "scripts/release_checks.ini"
BASELINE = ROOT / ".secrets.baseline"
#: The site's enabled Bandit rules (bandit_rules.json, "enabled": true; as of QGIS-Plugins-Website 73c20fa, 2026-07).
#: B111 and B320 are no longer in Bandit 1.9, which says so and runs the rest.
BANDIT_RULES = (
    "B101,B102,B103,B104,B105,B106,B107,B108,B110,B111,B112,B113,B201,B202,B301,B302,B303,B304,B305,B306,B307,"
    "B308,B310,B311,B312,B313,B314,B315,B316,B317,B318,B319,B320,B321,B323,B324,B401,B402,B403,B405,B406,B407,"
    "B408,B409,B412,B413,B501,B502,B503,B504,B505,B506,B507,B508,B509,B601,B602,B603,B604,B605,B606,B607,B608,"
    "B609,B610,B611,B612,B613,B614,B615,B701,B702,B703,B704")
#: The site's only disabled detect-secrets detector (secrets_rules.json); every other one runs.
SECRETS_ARGUMENTS = ("scan", "--all-files", "--exclude-files", r"metadata\.txt", "--exclude-files",
                     r"\.secrets\.baseline", "--disable-plugin", "IPPublicDetector")


class CheckError(Exception):
    """A tool did not run or did not answer in JSON: the zip was not checked."""


def _tool(module, *arguments, cwd=None):
    """Exit status and stdout of ``python -m module arguments`` (the tools of this Python's venv, pinned in
    requirements/dev.txt). Raises CheckError if it fails."""
    try:
        done = subprocess.run([sys.executable, "-m", module, *arguments], cwd=cwd, capture_output=True, text=True,
                              timeout=600)
    except subprocess.TimeoutExpired:
        raise CheckError(f"{module} took more than 10 minutes") from None
    if done.returncode not in (0, 1):
        raise CheckError(f"{module} failed (exit status {done.returncode}); is requirements/dev.txt installed "
                         f"('make setup')?\n{done.stderr.strip()[-2000:]}")
    return done.stdout


def bandit(folder, ignore_nosec=False):
    """[(rule, 'path:line', text)] of Bandit run as the site runs it on ``folder``; with ``ignore_nosec`` also the
    findings accepted inline. Raises CheckError when a file could not be parsed (it would go unchecked)."""
    report = json.loads(_tool("bandit", "-r", str(folder), "-f", "json", "--quiet", "-t", BANDIT_RULES,
                              *(["--ignore-nosec"] if ignore_nosec else [])) or "null")
    if report is None or report["errors"]:
        raise CheckError(f"Bandit did not check everything: {report and report['errors']}")
    return sorted((r["test_id"], f"{Path(r['filename']).relative_to(folder)}:{r['line_number']}", r["issue_text"])
                  for r in report["results"])


def _detector_names():
    """{reported secret type: detector name, the site's rule name (e.g. HexHighEntropyString)}."""
    from detect_secrets.core.plugins.util import get_mapping_from_secret_type_to_class
    return {kind: plugin.__name__ for kind, plugin in get_mapping_from_secret_type_to_class().items()}


def detect_secrets(folder):
    """detect-secrets' report (baseline format) of ``folder``, run as the site runs it but without a baseline."""
    return json.loads(_tool("detect_secrets", *SECRETS_ARGUMENTS, ".", cwd=folder))


def _secrets(report):
    """{(detector, path, hashed secret): line} of a detect-secrets report or baseline."""
    names = _detector_names()
    return {(names[s["type"]], path, s["hashed_secret"]): s["line_number"]
            for path, found in report["results"].items() for s in found}


def accepted_rules():
    """{'bandit': {rule: justification}, 'detect-secrets': {detector: justification}} from release_checks.ini."""
    config = configparser.ConfigParser(interpolation=None)
    config.optionxform = str  # rule names keep their case
    config.read(CONFIG, encoding="utf-8")
    return {section: dict(config[section]) for section in ("bandit", "detect-secrets")}


def _extracted(zip_path):
    folder = tempfile.TemporaryDirectory()
    with zipfile.ZipFile(zip_path) as archive:
        archive.extractall(folder.name)
    return folder


def check(zip_path):
    """Both checks on the contents of ``zip_path``: {'blocking': [(rule, 'path:line', …)], 'accepted': {'bandit':
    {rule}, 'detect-secrets': {detector}}} (accepted: by ``# nosec`` or by the zip's .secrets.baseline)."""
    with _extracted(zip_path) as folder:
        folder = Path(folder)
        baselines = list(folder.glob("*/.secrets.baseline"))
        found = _secrets(detect_secrets(folder))
        known = _secrets(json.loads(baselines[0].read_text(encoding="utf-8"))) if baselines else {}
        if baselines:  # the site's own run with it must work (it prints nothing)
            _tool("detect_secrets", *SECRETS_ARGUMENTS, "--baseline", str(baselines[0].relative_to(folder)), ".",
                  cwd=folder)
        blocking = bandit(folder)
        nosec = set(bandit(folder, ignore_nosec=True)) - set(blocking)
    blocking += sorted((name, f"{path}:{line}") for (name, path, hashed), line in found.items()
                       if (name, path, hashed) not in known)
    return {"blocking": blocking, "accepted": {"bandit": {f[0] for f in nosec},
                                               "detect-secrets": {key[0] for key in found if key in known}}}


def write_baseline(zip_path):
    """Write the detect-secrets findings of ``zip_path`` to .secrets.baseline (paths as in the extracted zip)."""
    with _extracted(zip_path) as folder:
        report = detect_secrets(Path(folder))
    BASELINE.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return BASELINE


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
        print(f"ACCEPTED WITHOUT A JUSTIFICATION in {CONFIG.name}:", item)
    if result["blocking"] or unjustified:
        raise SystemExit(f"{zip_path}: plugins.qgis.org would block this release (Bandit/detect-secrets). Fix the "
                         f"code, or accept a false positive (# nosec Bxxx; for detect-secrets review and "
                         f"'python scripts/release_checks.py ZIP --baseline') and justify its rule in {CONFIG.name}.")
    print(f"{zip_path}: Bandit and detect-secrets pass as plugins.qgis.org runs them; accepted:",
          ", ".join(sorted(result["accepted"]["bandit"] | result["accepted"]["detect-secrets"])) or "nothing")


if __name__ == "__main__":
    print(write_baseline(sys.argv[1])) if sys.argv[2:] == ["--baseline"] else main(sys.argv[1])
