"""`pip install ARGS` into this interpreter's environment, done by uv where it can be.

Why: `make setup` installs ~240 pinned packages, and on a 2-core machine with a cold cache pip takes
~1 min 50 s of a fresh `make demo` (2 min 40 s beside a running job); uv installs the same pinned set
(identical `pip freeze`) in ~25-35 s. But uv does not read pip's configuration, and a machine's pip
configuration is where its package sources live (a local wheel directory, extra indexes, a CA file, a
global constraints file): so they are read from `pip config list` (files and PIP_* variables, the same
precedence as pip) and handed to uv as arguments. uv considers every index (pip's behaviour), not only
the first that has a package. Where uv is missing or fails, pip itself installs, with a line saying so:
setup never depends on uv working.

    python tools/fast_install.py -c requirements.lock -e ".[all]"
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

# pip's scopes, weakest first: a later one overrides an earlier one (PIP_* variables are ":env:").
SCOPES = ("global", "user", "site", ":env:")
# pip option -> the uv option taking the same value; the list-valued ones take one value per word.
OPTIONS = {"index-url": "--default-index", "extra-index-url": "--index", "find-links": "--find-links",
           "constraint": "--constraint"}
CERT_OPTION = "cert"


def pip_config(python: str) -> dict[str, str]:
    """{option: value} of pip's effective configuration for `python`."""
    return parse_pip_config(subprocess.run([python, "-m", "pip", "config", "list"], capture_output=True, text=True,
                                           check=True).stdout)


def parse_pip_config(listing: str) -> dict[str, str]:
    """{option: value} from `pip config list` output (`scope.option='value'` lines), scopes merged as pip does."""
    by_scope: dict[str, dict[str, str]] = {}
    for line in listing.splitlines():
        key, sep, raw = line.partition("=")
        scope, _, option = key.rpartition(".")
        if sep and scope in SCOPES:
            by_scope.setdefault(scope, {})[option] = ast.literal_eval(raw)
    merged: dict[str, str] = {}
    for scope in SCOPES:
        merged.update(by_scope.get(scope, {}))
    return merged


def uv_arguments(config: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    """(uv pip install options, environment variables) equivalent to pip's `config`."""
    args = ["--index-strategy", "unsafe-best-match"]
    for option, uv_option in OPTIONS.items():
        for value in config.get(option, "").split():
            args += [uv_option, value]
    env = {"SSL_CERT_FILE": config[CERT_OPTION]} if config.get(CERT_OPTION) else {}
    return args, env


def main(argv: list[str]) -> int:
    python = sys.executable
    uv = shutil.which("uv", path=str(Path(python).parent))
    why = "no uv beside this interpreter"
    if uv is not None:
        try:  # a configuration uv cannot be given is no reason to fail setup: pip reads it itself
            args, env = uv_arguments(pip_config(python))
            # --compile-bytecode: pip writes .pyc files at install time and uv does not; where
            # PYTHONDONTWRITEBYTECODE is set, nothing writes them later, so every process would
            # compile torch & co. from source (~4-5 s of each stage's start, measured)
            done = subprocess.run([uv, "pip", "install", "--quiet", "--compile-bytecode", "--python", python,
                                   *args, *argv],
                                  env={**os.environ, **env})
            if done.returncode == 0:
                return 0
            why = f"uv failed (exit {done.returncode})"
        except (subprocess.CalledProcessError, ValueError, SyntaxError) as exc:
            why = f"pip's configuration could not be read ({exc})"
    print(f"fast_install: {why}; installing with pip", file=sys.stderr)
    return subprocess.run([python, "-m", "pip", "install", "-q", *argv]).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
