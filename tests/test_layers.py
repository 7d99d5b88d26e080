"""The packages' boundaries (issue 13 §6): the typed client is a library that
neither starts the server nor needs torch, and the `netscope` command prints
its help without starting torch. Each check runs in a fresh interpreter, so
what this test session already imported does not hide an import."""
from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("torch", "torchvision", "captum", "cv2", "netscope.server", "netscope.training", "netscope.cli")


def imported_after(code: str) -> list[str]:
    """The modules of HEAVY (or below them) that running `code` imports."""
    probe = (f"import sys\n{code}\nimport json\n"
             f"print(json.dumps(sorted(m for m in sys.modules "
             f"if any(m == h or m.startswith(h + '.') for h in {HEAVY!r}))))")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_the_client_library_imports_neither_server_cli_nor_torch():
    heavy = imported_after("import netscope.client\nimport netscope.client.jobs\nfrom netscope.client import Client")
    assert heavy == [], f"netscope.client imports {heavy}"


def test_the_viewer_is_a_client_of_the_server_only():
    """netscope.ui talks to the server through netscope.client: it imports neither the server nor torch."""
    import pytest

    pytest.importorskip("gradio", reason="the ui extra: run scripts/setup.sh test")
    heavy = imported_after("import netscope.ui.app, netscope.ui.views, netscope.ui.job_folder")
    assert heavy == [], f"netscope.ui imports {heavy}"


def test_the_command_builds_its_help_without_torch_or_the_server():
    heavy = imported_after("from netscope import cli\ncli.build_parser().format_help()")
    assert not [m for m in heavy if m.split(".")[0] in ("torch", "torchvision", "captum", "cv2")
                or m.startswith("netscope.server")], heavy
