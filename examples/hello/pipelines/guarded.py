"""hello's release with a gate of its own: no release while a `RELEASE_FREEZE` file exists.

The image release (tests + builds on every platform, verdict, publish the configured tags,
deploy if configured, remember the release), plus the `freeze` gate: while the project root
holds a file RELEASE_FREEZE, the verdict is rejected with the reason
`freeze: release freeze: <first line of the file>` (in verdict.json, the summary and the
error line) and nothing is published.

    echo "until the 2.0 launch" > RELEASE_FREEZE
    ci run guarded       # exit 1: release rejected, nothing published: freeze: release freeze: ...
    rm RELEASE_FREEZE
    ci run guarded       # exit 0: sha-<commit>, main, latest
"""

from __future__ import annotations

from pathlib import Path

from ci import Release, main
from pipelines.common import publish, stop_unless_passed

FREEZE_FILE = "RELEASE_FREEZE"


def freeze_check(root: Path) -> tuple[bool, str]:
    """(passed, reason): refused while `root/RELEASE_FREEZE` exists."""
    path = root / FREEZE_FILE
    if not path.exists():
        return True, ""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError as exc:  # unreadable (or a folder): still a freeze
        lines = [f"{FREEZE_FILE} unreadable: {exc.strerror or exc}"]
    first = next((line.strip() for line in lines if line.strip()), "(no reason given)")
    return False, f"release freeze: {first}"


def pipeline(run: Release) -> int:
    run.plan()
    if run.check_up_to_date():  # these exact inputs are released and still in place
        return 0
    run.platform_jobs()
    run.smoke()
    passed, reason = freeze_check(run.config.root_path)
    run.add_gate("freeze", passed, reason)
    verdict = run.decide(require_model=False)
    stop_unless_passed(run, verdict)
    publish(run)
    run.deploy()
    run.record_release()
    run.notify()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(pipeline))
