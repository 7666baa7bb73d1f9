import subprocess
import sys

import holodask
from holodask.cli import main


def test_version_flag(capsys):
    try:
        main(["--version"])
    except SystemExit as exc:
        assert exc.code == 0
    out = capsys.readouterr().out
    assert out.strip() == f"holodask {holodask.__version__}"


def test_module_entry_point_prints_help():
    proc = subprocess.run([sys.executable, "-m", "holodask"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "usage: holodask" in proc.stdout
