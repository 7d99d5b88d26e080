"""`netscope ui` without the ui extra: exit 2, saying what to install, before any connection."""
from __future__ import annotations

import sys


def test_without_gradio_the_command_says_what_to_install(monkeypatch, capsys):
    from netscope import cli

    monkeypatch.setitem(sys.modules, "gradio", None)  # import gradio raises ImportError
    code = cli.main(["ui", "--server", "127.0.0.1:1"])
    assert code == 2
    assert "pip install 'netscope[ui]'" in capsys.readouterr().err
