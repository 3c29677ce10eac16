"""tools/fast_install.py: pip's configuration handed to uv, and pip itself where uv cannot install."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _tool():
    spec = importlib.util.spec_from_file_location("fast_install_tool", REPO / "tools" / "fast_install.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# What `pip config list` printed on a development machine: files and PIP_* variables (":env:") together.
LISTING = """\
:env:.cert='/etc/ssl/certs/ca-certificates.crt'
:env:.find-links='/opt/wheels'
global.cert='/etc/ssl/certs/other.crt'
global.constraint='/etc/xdg/pip/constraints.txt'
global.extra-index-url='file:///opt/pypi/simple file:///opt/pypi-more/simple'
global.find-links='/opt/elsewhere'
user.index-url='https://mirror.example/simple'
"""


def test_pip_configuration_becomes_uv_arguments_with_pips_precedence() -> None:
    tool = _tool()
    config = tool.parse_pip_config(LISTING)
    # a PIP_* variable overrides the files, as in pip
    assert config["find-links"] == "/opt/wheels"
    assert config["cert"] == "/etc/ssl/certs/ca-certificates.crt"
    args, env = tool.uv_arguments(config)
    assert args == ["--index-strategy", "unsafe-best-match", "--default-index", "https://mirror.example/simple",
                    "--index", "file:///opt/pypi/simple", "--index", "file:///opt/pypi-more/simple",
                    "--find-links", "/opt/wheels", "--constraint", "/etc/xdg/pip/constraints.txt"]
    assert env == {"SSL_CERT_FILE": "/etc/ssl/certs/ca-certificates.crt"}
    assert tool.uv_arguments({}) == (["--index-strategy", "unsafe-best-match"], {})


def test_this_interpreters_pip_configuration_is_read() -> None:
    """The real `pip config list` of the test interpreter parses (whatever it holds on this machine)."""
    tool = _tool()
    config = tool.pip_config(sys.executable)
    listing = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True,
                             check=True).stdout
    assert set(config) == {line.partition("=")[0].rpartition(".")[2] for line in listing.splitlines() if "=" in line}


def test_a_failing_install_is_reported_not_swallowed(tmp_path: Path) -> None:
    """A requirement nothing can satisfy: uv (if present) fails, pip is tried and fails, the exit status says so."""
    done = subprocess.run([sys.executable, str(REPO / "tools" / "fast_install.py"), "--no-index", "--find-links",
                           str(tmp_path), "duelguard-no-such-package==0.0.1"], capture_output=True, text=True)
    assert done.returncode != 0
    assert "installing with pip" in done.stderr
