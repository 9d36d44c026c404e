"""scripts/stack's Connect jars: one directory per pom.xml, never rewritten in place.

Checkouts with different poms share ~/.cache/cdc-recon. When one of them emptied and
refilled the shared `connect-lib` while another's worker ran from it, that worker's next
task restart (Connect restarts the Debezium task after every broker outage) failed with
NoSuchFileException and stayed FAILED: the chaos run's stall after a broker restart.
"""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONNECT = ROOT / "scripts" / "stack.d" / "connect"


def test_the_jar_directory_is_named_by_the_pom(tmp_path: Path) -> None:
    script = (
        f"HERE={ROOT / 'scripts' / 'stack.d'} CACHE={tmp_path} STATE={tmp_path} "
        f"HOST=127.0.0.1 CONNECT_PORT=1; source {CONNECT / 'connect.sh'}; echo $CONNECT_LIB"
    )
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True)
    stamp = hashlib.sha256((CONNECT / "pom.xml").read_bytes()).hexdigest()[:16]
    assert done.stdout.strip() == f"{tmp_path}/connect-lib-{stamp}"


def test_a_directory_in_use_is_never_emptied() -> None:
    text = (CONNECT / "connect.sh").read_text()
    assert 'rm -rf "$CONNECT_LIB"' not in text
    assert 'mv -T "$fresh" "$CONNECT_LIB"' in text, "filled aside, then moved in whole"
