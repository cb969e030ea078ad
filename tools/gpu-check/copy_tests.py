"""Reads `cargo test --no-run --message-format=json` on stdin and copies each test executable to
device-bin/tests/<crate folder>-<test name> (e.g. nextdit-parity), the name tools/gpu-check/run
uses to find the crate's fixtures."""

import json
import shutil
import sys

for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["test"]:
        crate = m["package_id"].split("#")[0].rsplit("/", 1)[-1]
        shutil.copy(m["executable"], f"device-bin/tests/{crate}-{m['target']['name']}")
