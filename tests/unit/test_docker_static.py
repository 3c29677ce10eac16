"""Static checks of docker/*/Dockerfile that CI can run without a Docker engine or a registry.

Each Dockerfile parses; every base image is pinned (a tag other than `latest`, or a digest); the final
stage runs as a non-root user; every COPY source exists in the build context (the repository root);
entrypoint scripts are executable; and every `duelguard <command>` the images run exists in the CLI.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import typer
from dockerfile_parse import DockerfileParser

from duelguard.cli import app

REPO = Path(__file__).resolve().parents[2]
DOCKERFILES = sorted((REPO / "docker").glob("*/Dockerfile"))
KNOWN = {"FROM", "ARG", "ENV", "RUN", "COPY", "ADD", "USER", "WORKDIR", "ENTRYPOINT", "CMD", "EXPOSE",
         "LABEL", "HEALTHCHECK", "SHELL", "VOLUME", "STOPSIGNAL", "ONBUILD", "COMMENT"}
# A `duelguard` invocation at a shell command position (line start, after &&, ;, |, then, exec), with
# optional VAR=value prefixes and an optional venv path: captures the first argument.
INVOCATION = re.compile(r"(?:^|&&|;|\||\bthen\b|\bexec\b)\s*(?:[A-Za-z_][A-Za-z0-9_]*=\S+\s+)*(?:\S*/)?duelguard\s+(\S+)", re.M)


def parse(path: Path) -> list[dict]:
    parser = DockerfileParser(fileobj=path.open("rb"))
    return parser.structure


def cli_commands() -> set[str]:
    """Every command path of the typer app: 'predict', 'pipeline compile', ..."""
    root = typer.main.get_command(app)
    out: set[str] = set()

    def walk(group, prefix: str) -> None:  # typer vendors click: duck-type groups
        for name, cmd in group.commands.items():
            out.add(prefix + name)
            if hasattr(cmd, "commands"):
                walk(cmd, prefix + name + " ")

    walk(root, "")
    return out


def resolved_bases(structure: list[dict]) -> list[tuple[str, str]]:
    """(image, stage alias) of each FROM, with ARG defaults declared before the first FROM substituted."""
    args: dict[str, str] = {}
    bases = []
    seen_from = False
    for ins in structure:
        if ins["instruction"] == "ARG" and not seen_from:
            name, _, default = ins["value"].partition("=")
            args[name.strip()] = default.strip().strip('"')
        if ins["instruction"] == "FROM":
            seen_from = True
            parts = ins["value"].split()
            image = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), parts[0])
            alias = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else ""
            bases.append((image, alias))
    return bases


def test_dockerfiles_exist():
    assert {p.parent.name for p in DOCKERFILES} == {"trainer", "serving", "mlflow"}


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.parent.name)
def test_dockerfile_parses_pinned_nonroot(path: Path):
    structure = parse(path)
    assert structure, f"{path}: empty"
    for ins in structure:
        assert ins["instruction"] in KNOWN, f"{path}:{ins['startline'] + 1}: unknown instruction {ins['instruction']}"
    bases = resolved_bases(structure)
    assert len(bases) >= 2, f"{path}: expected a multi-stage build"
    stages = {alias for _, alias in bases if alias}
    for image, _ in bases:
        if image in stages:
            continue
        assert "$" not in image, f"{path}: base {image} depends on an ARG without a default"
        name = image.split("@")[0]
        tag = name.rsplit("/", 1)[-1].partition(":")[2]
        assert "@sha256:" in image or (tag and tag != "latest"), f"{path}: base image {image} is not pinned"
    # The final stage (after the last FROM) must switch to a non-root user.
    last_from = max(i for i, ins in enumerate(structure) if ins["instruction"] == "FROM")
    users = [ins["value"].split(":")[0].strip() for ins in structure[last_from:] if ins["instruction"] == "USER"]
    assert users and users[-1] not in ("root", "0"), f"{path}: final stage runs as root"


def in_build_context(src: str) -> bool:
    """Whether .dockerignore lets `src` into the context (last matching rule wins; a rule matching a
    parent directory matches its contents, as in Docker)."""
    import fnmatch

    rules = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines() if line.strip() and not line.startswith("#")]
    parts = Path(src.rstrip("/")).parts
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    included = True
    for rule in rules:
        negate = rule.startswith("!")
        pattern = rule.lstrip("!").rstrip("/").replace("**/", "*")
        if any(fnmatch.fnmatch(c, pattern) for c in candidates):
            included = negate
    return included


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.parent.name)
def test_copy_sources_exist(path: Path):
    for ins in parse(path):
        if ins["instruction"] not in ("COPY", "ADD"):
            continue
        words = ins["value"].split()
        if any(w.startswith("--from=") for w in words):
            continue
        sources = [w for w in words if not w.startswith("--")][:-1]
        assert sources, f"{path}:{ins['startline'] + 1}: COPY without a source"
        for src in sources:
            target = REPO / src
            assert target.exists(), f"{path}:{ins['startline'] + 1}: COPY source {src} does not exist in the build context"
            assert in_build_context(src), f"{path}:{ins['startline'] + 1}: COPY source {src} is excluded by .dockerignore"
            if "entrypoint" in src:
                assert os.access(target, os.X_OK), f"{src} is not executable"


def test_dockerignore_keeps_data_out():
    assert not in_build_context("data/seed/train.jsonl") and not in_build_context("models/classifier/iter_0")
    assert not in_build_context(".venv/bin/python") and in_build_context("libs/duelguard/cli.py")
    assert not in_build_context("infra/overlays/prod/secrets/postgres.env")  # real secrets never reach an image


def test_base_images_match_nvidia_release():
    """The serving image's Triton release matches the trainer's PyTorch release (same NGC month)."""
    bases = {p.parent.name: resolved_bases(parse(p))[0][0] for p in DOCKERFILES}
    assert bases["trainer"].startswith("nvcr.io/nvidia/pytorch:") and bases["serving"].startswith("nvcr.io/nvidia/tritonserver:")
    release = bases["trainer"].split(":")[1].removesuffix("-py3")
    assert bases["serving"].split(":")[1] == f"{release}-py3"


def test_trainer_installs_library_with_extras_under_the_lock():
    text = (REPO / "docker/trainer/Dockerfile").read_text()
    assert re.search(r'pip install --constraint requirements\.lock "\.\[loop,serving,pipelines\]"', text)


def test_every_duelguard_invocation_exists_in_cli():
    commands = cli_commands()
    found: list[tuple[str, str]] = []
    for path in DOCKERFILES + sorted((REPO / "docker").glob("*/*.sh")):
        text = path.read_text()
        for ins in parse(path) if path.name == "Dockerfile" else []:
            if ins["instruction"] == "ENTRYPOINT" and ins["value"].startswith("["):
                entry = json.loads(ins["value"])
                if entry and entry[0] == "duelguard":
                    cmd = next((json.loads(i["value"]) for i in parse(path) if i["instruction"] == "CMD"), [])
                    first = entry[1:2] or cmd[:1]
                    if first and not first[0].startswith("-"):
                        found.append((str(path.relative_to(REPO)), first[0]))
        for match in INVOCATION.finditer(text.replace("\\\n", " ")):
            first = match.group(1).strip('"')
            if not first.startswith("-"):
                found.append((str(path.relative_to(REPO)), first))
    assert ("docker/serving/Dockerfile", "serve-container") in found, "the serving image starts from a model URI alone"
    for where, cmd in found:
        assert cmd in commands, f"{where}: `duelguard {cmd}` is not a command of the CLI ({sorted(commands)})"


def test_cli_command_listing_sees_subcommands():
    assert {"pipeline compile", "pipeline run-local", "pipeline submit"} <= cli_commands()


def test_serving_variants_differ_only_in_build_arguments():
    """The CPU variant is this Dockerfile with BASE_IMAGE and SERVING_TARGET overridden; the target
    reaches the entrypoint's environment, where duelguard.serving.container reads it."""
    structure = parse(REPO / "docker/serving/Dockerfile")
    args = {ins["value"].partition("=")[0] for ins in structure if ins["instruction"] == "ARG"}
    assert {"BASE_IMAGE", "SERVING_TARGET", "PIP_FIND_LINKS", "PIP_NO_INDEX"} <= args
    env = " ".join(ins["value"] for ins in structure if ins["instruction"] == "ENV")
    from duelguard.serving.container import REPOSITORY_ENV, TARGET_ENV

    assert f"{TARGET_ENV}=${{SERVING_TARGET}}" in env and f"{REPOSITORY_ENV}=/models" in env
    assert os.access(REPO / "docker/base/build-debian-base.sh", os.X_OK)


def test_mlflow_image_always_runs_the_auth_app(tmp_path: Path):
    """The cluster's registry cannot start open: the entrypoint runs MLflow's basic-auth app and stops, naming
    the variable, when an admin credential or the Flask secret is missing or empty; the image installs the
    auth extra at requirements.lock's MLflow version."""
    import subprocess

    entrypoint = REPO / "docker/mlflow/entrypoint.sh"
    assert "--app-name basic-auth" in entrypoint.read_text()
    env = {"PATH": "/usr/bin:/bin", "TMPDIR": str(tmp_path), "MLFLOW_BACKEND_STORE_URI": "sqlite:///x.db",
           "MLFLOW_ARTIFACTS_DESTINATION": str(tmp_path), "MLFLOW_AUTH_ADMIN_USERNAME": "admin",
           "MLFLOW_AUTH_ADMIN_PASSWORD": "secret", "MLFLOW_FLASK_SERVER_SECRET_KEY": "secret"}
    for name in ("MLFLOW_AUTH_ADMIN_USERNAME", "MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY"):
        for broken in ({k: v for k, v in env.items() if k != name}, {**env, name: ""}):
            out = subprocess.run(["sh", str(entrypoint)], env=broken, capture_output=True, text=True, timeout=30)
            assert out.returncode != 0 and name in out.stderr, (name, out.stderr)
    for name in ("MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY"):  # a template copied as is
        out = subprocess.run(["sh", str(entrypoint)], env={**env, name: "CHANGE_ME_X"}, capture_output=True,
                             text=True, timeout=30)
        assert out.returncode != 0 and "placeholder" in out.stderr, out.stderr
    lock = dict(line.split("==") for line in (REPO / "requirements.lock").read_text().splitlines()
                if "==" in line and not line.startswith("#"))
    wanted = (REPO / "docker/mlflow/requirements.txt").read_text().splitlines()
    assert f"mlflow[auth]=={lock['mlflow']}" in wanted and any(w.startswith("Flask-WTF==") for w in wanted)
