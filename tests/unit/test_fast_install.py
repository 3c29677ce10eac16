"""tools/fast_install.py: pip's configuration handed to uv, and pip itself where uv cannot install."""

from __future__ import annotations

import importlib.util
import os
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


def _wheel(directory: Path, name: str) -> Path:
    """A minimal pure-Python wheel of one module, built by hand (no build backend, no network)."""
    import zipfile
    path = directory / f"{name}-0.1-py3-none-any.whl"
    info = f"{name}-0.1.dist-info"
    files = {f"{name}/__init__.py": "ANSWER = 42\n",
             f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n",
             f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: hand\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    with zipfile.ZipFile(path, "w") as zf:
        for member, text in files.items():
            zf.writestr(member, text)
        zf.writestr(f"{info}/RECORD", "".join(f"{member},,\n" for member in [*files, f"{info}/RECORD"]))
    return path


def test_installed_modules_come_compiled(tmp_path: Path) -> None:
    """Installed modules carry their .pyc, as pip's installs do: where PYTHONDONTWRITEBYTECODE is set nothing
    writes them later, and every stage process would compile torch & co. from source again."""
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    _wheel(wheels, "duelguard_fast_install_probe")
    target = tmp_path / "target"
    done = subprocess.run([sys.executable, str(REPO / "tools" / "fast_install.py"), "--no-index", "--find-links",
                           str(wheels), "--target", str(target), "duelguard_fast_install_probe"],
                          capture_output=True, text=True, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    assert done.returncode == 0, done.stderr
    assert "installing with pip" not in done.stderr  # uv did it (make setup puts uv beside the interpreter)
    assert (target / "duelguard_fast_install_probe" / "__init__.py").is_file()
    assert list((target / "duelguard_fast_install_probe" / "__pycache__").glob("__init__.*.pyc"))
