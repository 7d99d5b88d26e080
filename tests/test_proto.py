"""The committed stubs are what the .proto generates (CI fails when they are stale)."""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_generated_stubs_are_up_to_date():
    env = dict(os.environ, PYTHON=sys.executable)
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "gen_proto.sh"), "--check"], capture_output=True,
                          text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_package_does_not_install_bare_top_level_names():
    """proto/ must stay free of __init__.py: `proto` belongs to proto-plus."""
    assert not (ROOT / "proto" / "__init__.py").exists()
    assert not (ROOT / "proto" / "netscope" / "__init__.py").exists()
