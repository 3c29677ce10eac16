"""Model registry: register evaluated classifiers, promote by rule, roll back. MLflow 3 aliases only.

- register_classifier (stage `register`): logs models/classifier/iter_<i> as an MLflow model into
  the run that evaluated it (its id is in the eval metrics JSON) and registers it as
  params.tracking.registered_model. The version is tagged with iteration, training data hash, git
  commit, profile and its metrics (avg F1, F1 per language, benign FPR) per evaluated split, plus
  the hash of the frozen eval set those metrics came from.
- promote: the candidate (default: newest version) against the `champion` alias on the same frozen
  eval set (params.promotion.eval_split). Metrics are read from the tags when they were computed
  on the current eval set; a version whose tags name another eval set is re-evaluated from its
  registered model. Promotion moves `champion` to the candidate and `previous` to the old
  champion; a refusal is recorded on the candidate (duelguard.promotion = refused + reasons).
- rollback: `champion` back to the version it replaced; `previous` steps back one more.

Failure behaviour (tests/integration/test_release_faults.py stops a real `mlflow server` mid-call):
- A registry that cannot be read is a RegistryError, never "no champion" (duelguard.registry.lookup).
- Promotion has one commit point, the `champion` alias write. Before it, only the candidate's
  duelguard.replaced_version tag is written (meaningless until the alias moves); after it, the
  `previous` alias and the promotion tags, which a rerun of the same promotion completes. So a
  registry that dies mid-promotion leaves either the old champion with nothing promoted, or the new
  champion whose bookkeeping the rerun finishes; rollback reads the champion's replaced_version tag,
  written before the commit, so it is right in both cases.
- register finds the version an earlier, interrupted run created (tag duelguard.eval_run_id) before
  creating one, so a crash between registering and writing the record never duplicates a version.

Concurrency (two `promote`/`rollback` calls at once; tests/integration/test_release_faults.py races
two promotions against a real `mlflow server`): MLflow has no compare-and-set on aliases and tags
are last-writer-wins, so a lease written as a tag would let two writers both believe they hold it.
The one atomic operation the registry offers is creating a registered model: the name is the
primary key of the store's table, so of two concurrent `create_registered_model` calls exactly one
succeeds and the other gets RESOURCE_ALREADY_EXISTS. The lease is therefore a registered model
named `<model>.promotion-lock` (tags: holder token, expiry). A promotion decides without it (the
comparison may re-evaluate for minutes), then takes the lease, re-reads the champion and writes only
if it is still the version it compared against (compare-and-set); otherwise it releases the lease
and decides again against the new champion. A lease whose holder died expires after LEASE_S and is
broken by the next caller.

Before the alias moves, the candidate must load and serve (check `loads`, promotion.load_check):
duelguard.registry.loadcheck downloads it (its model digest checked), exports it to a temporary
Triton repository (ONNX parity-verified against torch) and scores probe texts.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from duelguard.config import Params
from duelguard.digest import check_digest
from duelguard.errors import ModelNotFoundError, RegistryError
from duelguard.fsio import DataError, atomic_write_json, read_json
from duelguard.layout import Layout, probe_dir_of
from duelguard.registry.lookup import (CHAMPION_ALIAS, _store, alias_version, find_version, get_version, is_missing,
                                       registry_call, search_versions)
from duelguard.registry.models import DIGEST_TAG
from duelguard.registry.rules import Check, Decision, VersionMetrics, check_rules

PREVIOUS = "previous"
PROMOTION_TAG = "duelguard.promotion"
REASONS_TAG = "duelguard.promotion_reasons"
REPLACED_TAG = "duelguard.replaced_version"
EVAL_RUN_TAG = "duelguard.eval_run_id"
LOCK_SUFFIX = ".promotion-lock"
LOCK_HOLDER_TAG = "duelguard.lock.holder"
LOCK_EXPIRES_TAG = "duelguard.lock.expires"
LEASE_S = 120.0  # longer than any alias + bookkeeping write; a dead holder's lease is broken after it
LEASE_WAIT_S = 180.0  # how long a caller waits for a live holder before giving up with an error
MAX_DECISIONS = 5  # re-decisions when the champion moved under us before giving up


def _client(params: Params, root: str | Path) -> Any:
    """A client on the tracking store (mlflow's fluent API pointed there too); RegistryError if unreachable."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from duelguard.tracking import configure, tracking_uri

    try:
        configure(params, root)
    except MlflowException as exc:
        raise RegistryError(f"MLflow registry at {tracking_uri(params, root)}: connecting failed: {exc.message}") from exc
    return MlflowClient()


def _newest_version(client: Any, name: str) -> Any:
    versions = search_versions(client, f"name='{name}'")
    if not versions:
        raise ModelNotFoundError(f"registered model {name!r} has no versions: run `duelguard register` first")
    return max(versions, key=lambda v: int(v.version))


# register -----------------------------------------------------------------------------------------
def _training_metadata(model_dir: Path) -> dict[str, Any]:
    from duelguard.classifier.saved import read_metadata

    return read_metadata(model_dir).get("training") or {}


def _evaluate_run(client: Any, run_id: str, where: Path, store: str) -> None:
    """The evaluate run must be in this store: ModelNotFoundError if it is not, RegistryError if unreadable."""
    from mlflow.exceptions import MlflowException

    try:
        client.get_run(run_id)
    except MlflowException as exc:
        if not is_missing(exc):
            raise RegistryError(f"MLflow store at {store}: reading evaluate run {run_id} failed: {exc.message}") from exc
        raise ModelNotFoundError(
            f"evaluate run {run_id} (from {where}) is not in the MLflow store at {store}; "
            "re-run the evaluate stage against this store"
        ) from None


def register_classifier(params: Params, layout: Layout, iteration: int) -> dict[str, Any]:
    """Stage: log the evaluated classifier into its evaluate run and register it as a new version.

    Resumable: a version already registered from this evaluate run (an earlier run died before its
    record was written) is reused, never registered twice.
    """
    import mlflow

    from duelguard.registry.models import log_classifier
    from duelguard.tracking import git_commit, tracking_uri

    name = params.tracking.registered_model
    evaluation = read_json(layout.eval_metrics(iteration))
    run_id = evaluation.get("mlflow_run_id")
    if not run_id:
        raise DataError(f"{layout.eval_metrics(iteration)}: no 'mlflow_run_id' (run the evaluate stage first)")
    client = _client(params, layout.root)
    store = tracking_uri(params, layout.root)
    out_path = layout.registry_record(iteration)
    if out_path.exists():
        done = read_json(out_path)
        if done.get("run_id") == run_id and done.get("tracking_uri") == store:
            if find_version(client, name, done["version"]) is not None:
                return {**done, "skipped": True}
            # the recorded version is gone (e.g. a fresh store): register again
    _evaluate_run(client, run_id, layout.eval_metrics(iteration), store)

    earlier = search_versions(client, f"name='{name}' and tags.`{EVAL_RUN_TAG}` = '{run_id}'")
    if earlier:
        version = max(earlier, key=lambda v: int(v.version))
        model_uri = version.source
    else:
        # This step's own copy: the path evaluate recorded may be another step's (a KFP pod's) folder.
        model_dir = layout.classifier_dir(iteration)
        digest = _evaluated_digest(evaluation, model_dir, layout.eval_metrics(iteration))
        training = _training_metadata(model_dir)
        tags = {
            DIGEST_TAG: digest,
            "duelguard.iteration": str(iteration),
            "duelguard.data_hash": str(training.get("data_hash", "unknown")),
            "duelguard.git_commit": str(training.get("git_commit") or git_commit(layout.root)),
            "duelguard.profile": params.profile,
            EVAL_RUN_TAG: run_id,
        }
        for split, eval_set in evaluation.get("eval_set", {}).items():
            tags.update(VersionMetrics.from_summary(evaluation[split], eval_set["hash"]).to_tags(split))
        with registry_call(client, f"logging and registering {model_dir} as {name}"):
            with mlflow.start_run(run_id=run_id):
                info = log_classifier(model_dir)
            # The tags travel in the create call itself, so a version never exists without its run id.
            version = mlflow.register_model(info.model_uri, name, tags=tags)
        model_uri = info.model_uri
    summary = evaluation.get(params.promotion.eval_split, {})
    with registry_call(client, f"describing {name} v{version.version}"):
        client.update_model_version(
            name, version.version,
            description=f"iteration {iteration} ({params.profile} profile); {params.promotion.eval_split} avg F1 "
                        f"{summary.get('avg_f1')}, benign FPR {summary.get('fpr')}",
        )
    record = {"name": name, "version": int(version.version), "run_id": run_id, "model_uri": model_uri,
              "iteration": iteration, "tracking_uri": store}
    atomic_write_json(out_path, record)
    return {**record, "skipped": False, "recovered": bool(earlier)}


def _evaluated_digest(evaluation: dict[str, Any], model_dir: Path, where: Path) -> str:
    """The model digest `evaluate` recorded, after checking that `model_dir` still has it: the registered
    weights must be the evaluated ones (a retrain or an edit in between would register unevaluated weights)."""
    recorded = evaluation.get("model_digest")
    if not recorded:
        raise DataError(f"{where}: no 'model_digest' (evaluated by an older duelguard): re-run the evaluate stage "
                        "so that the registered weights can be checked against the evaluated ones")
    check_digest(model_dir, recorded, f"registering {model_dir} (evaluated as {where})")
    return str(recorded)


# promote ------------------------------------------------------------------------------------------
def _reevaluate(params: Params, layout: Layout, name: str, version: str, records: list[dict[str, Any]],
                eval_hash: str) -> VersionMetrics:
    """Metrics of a registered version (and of the probe it carries) on the current frozen eval set."""
    from duelguard.classifier.loader import load_classifier
    from duelguard.evaluation.evaluate import evaluate_model
    from duelguard.encoder import embed_cached
    from duelguard.probe import Probe
    from duelguard.registry.models import local_model_dir

    model_dir = local_model_dir(f"models:/{name}/{version}", params, layout.root)
    probe_dir = probe_dir_of(model_dir)
    probe = Probe.load(probe_dir) if probe_dir.is_dir() else None
    vectors = embed_cached([r["text"] for r in records], layout.weights_cache) if probe is not None else None
    report, _ = evaluate_model(load_classifier(model_dir, layout.weights_cache), records, params.classifier.predict_batch_size, probe, vectors)
    return VersionMetrics.from_summary(report["summary"], eval_hash)


def _metrics_on(params: Params, layout: Layout, client: Any, mv: Any, split: str,
                current: tuple[list[dict[str, Any]], str] | None, ref_hash: str, dry_run: bool,
                need_lookalike: bool = False, need_recall: bool = False) -> tuple[VersionMetrics, bool]:
    """(metrics of version `mv` on the frozen set `split` whose hash is `ref_hash`, whether it had to be
    re-evaluated). need_lookalike / need_recall: tags without the look-alike FPR / the recall and benign
    FPR per language (a version registered before they were recorded) count as stale, so the
    candidate's figure has something to be compared with."""
    tagged = VersionMetrics.from_tags(dict(mv.tags), split)
    if (tagged is not None and tagged.eval_set_hash == ref_hash and not (need_lookalike and tagged.lookalike_fpr is None)
            and not (need_recall and not (tagged.recall_by_lang and tagged.fpr_by_lang))):
        return tagged, False
    if current is None:
        raise DataError(
            f"v{mv.version} was evaluated on another {split} set ({tagged.eval_set_hash if tagged else 'none'}) and "
            f"{layout.seed_split(split)} is missing, so it cannot be re-evaluated on the frozen set {ref_hash[:12]}"
        )
    metrics = _reevaluate(params, layout, mv.name, mv.version, current[0], current[1])
    if not dry_run:
        with registry_call(client, f"recording re-evaluated metrics on {mv.name} v{mv.version}"):
            for key, value in metrics.to_tags(split).items():
                client.set_model_version_tag(mv.name, mv.version, key, value)
    return metrics, True


def promote(params: Params, candidate_version: str | int | None = None, dry_run: bool = False,
            layout: Layout | None = None) -> Decision:
    """Compare a candidate with the champion under params.promotion; move aliases unless refused or dry run.

    Compare-and-set: the decision is written under the registry lease, and only if the champion is
    still the one it was compared against; if another promotion moved it meanwhile, decide again.
    """
    layout = layout or Layout.from_params(params)
    client = _client(params, layout.root)
    name = params.tracking.registered_model
    candidate = (get_version(client, name, candidate_version) if candidate_version is not None
                 else _newest_version(client, name))
    loads: dict[str, Check] = {}  # the load check concerns the candidate alone: run it once
    for _ in range(MAX_DECISIONS):
        decision = _decide(params, layout, client, candidate, dry_run, loads)
        if dry_run:
            return decision
        with _lease(client, name, f"promoting v{candidate.version}"):
            champion = alias_version(client, name, CHAMPION_ALIAS)
            if _version_of(champion) != decision.champion_version:
                continue  # moved since we compared: release the lease, compare with the new champion
            if decision.promote or decision.champion_version != str(candidate.version):
                _apply(client, decision)
            else:  # already the champion: finish an interrupted promotion's bookkeeping
                with registry_call(client, f"finishing the interrupted promotion of {name} v{candidate.version}"):
                    if _finish_promotion(client, get_version(client, name, candidate.version)):
                        decision.note = f"v{candidate.version} is already the champion; finished its interrupted promotion"
            return decision
    raise RegistryError(f"{name}: the champion moved {MAX_DECISIONS} times while v{candidate.version} was being "
                        "compared with it; rerun `duelguard promote` when the concurrent promotions are done")


def _version_of(mv: Any | None) -> str | None:
    return str(mv.version) if mv is not None else None


def _decide(params: Params, layout: Layout, client: Any, candidate: Any, dry_run: bool,
            loads: dict[str, Check]) -> Decision:
    """The decision for `candidate` against the champion of this moment (reads only, except re-evaluated
    metrics tags); its champion_version is what a compare-and-set write must still find."""
    from duelguard.evalset import eval_set_hash, evaluation_records

    name = params.tracking.registered_model
    split = params.promotion.eval_split
    champion = alias_version(client, name, CHAMPION_ALIAS)
    if champion is not None and str(champion.version) == str(candidate.version):
        return Decision(name, str(candidate.version), str(champion.version), promote=False, dry_run=dry_run,
                        note=f"v{candidate.version} is already the champion: nothing to do")

    current = None
    if split == "suite" or layout.seed_split(split).exists():  # the suite ships with the package
        records = evaluation_records(split, params, layout)
        current = (records, eval_set_hash(records))
    cand_tags = VersionMetrics.from_tags(dict(candidate.tags), split)
    ref_hash = current[1] if current else (cand_tags.eval_set_hash if cand_tags else None)
    if ref_hash is None:
        raise DataError(f"v{candidate.version} has no {split} metrics and {layout.seed_split(split)} is missing")
    notes: list[str] = []
    cand_metrics, redone = _metrics_on(params, layout, client, candidate, split, current, ref_hash, dry_run)
    if redone:
        notes.append(f"candidate v{candidate.version} re-evaluated on the frozen {split} set")
    champ_metrics = None
    guards: dict[str, tuple[VersionMetrics, VersionMetrics | None]] = {}
    if champion is not None:
        champ_metrics, redone = _metrics_on(params, layout, client, champion, split, current, ref_hash, dry_run,
                                            need_lookalike=cand_metrics.lookalike_fpr is not None)
        if redone:
            notes.append(f"champion v{champion.version} re-evaluated on the frozen {split} set")
        for guard in params.promotion.guard_sets:
            guard_records = evaluation_records(guard, params, layout)
            guard_set = (guard_records, eval_set_hash(guard_records))
            on_guard = {}
            for who, mv in (("candidate", candidate), ("champion", champion)):
                on_guard[who], redone = _metrics_on(params, layout, client, mv, guard, guard_set, guard_set[1], dry_run,
                                                    need_recall=True)
                if redone:
                    notes.append(f"{who} v{mv.version} re-evaluated on the frozen {guard} set")
            guards[guard] = (on_guard["candidate"], on_guard["champion"])
    checks = check_rules(cand_metrics, champ_metrics, params.promotion, guards)
    if all(c.passed for c in checks) and params.promotion.load_check:
        if "loads" not in loads:
            from duelguard.registry.loadcheck import load_check

            loads["loads"] = load_check(params, layout, name, str(candidate.version))
        checks.append(loads["loads"])
    return Decision(name, str(candidate.version), str(champion.version) if champion else None,
                    promote=all(c.passed for c in checks), checks=checks, candidate_metrics=cand_metrics,
                    champion_metrics=champ_metrics, dry_run=dry_run, note="; ".join(notes))


@contextmanager
def _lease(client: Any, name: str, what: str) -> Iterator[None]:
    """Hold the registry's promotion lease for `name` (see the module docstring: creating a registered
    model is the registry's only atomic test-and-set). Waits for a live holder up to LEASE_WAIT_S;
    breaks a lease whose holder let it expire (LEASE_S)."""
    from mlflow.exceptions import MlflowException

    lock, token = name + LOCK_SUFFIX, uuid.uuid4().hex
    deadline = time.monotonic() + LEASE_WAIT_S
    while True:
        tags = {LOCK_HOLDER_TAG: token, LOCK_EXPIRES_TAG: f"{time.time() + LEASE_S:.3f}"}
        try:
            client.create_registered_model(lock, tags=tags, description=f"duelguard promotion lease: {what} "
                                           "(deleted when done; expires by its tag if the holder died)")
            break
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise RegistryError(f"MLflow registry at {_store(client)}: taking the promotion lease {lock!r} "
                                    f"for {what} failed: {exc.message}") from exc
        holder = _break_if_expired(client, lock)
        if time.monotonic() > deadline:
            raise RegistryError(f"{what}: the promotion lease {lock!r} is held by {holder} (another promote or "
                                f"rollback is running) for more than {LEASE_WAIT_S:.0f} s; retry when it is done")
        time.sleep(0.1 + random.random() * 0.2)  # jitter: concurrent waiters do not retry in lockstep
    try:
        yield
    except BaseException:
        try:  # the registry failing is likely why we are here: its error is the one to report
            _release(client, lock, token)
        except RegistryError:
            pass  # the lease expires after LEASE_S; the next caller breaks it
        raise
    _release(client, lock, token)


def _break_if_expired(client: Any, lock: str) -> str:
    """Delete the lease `lock` if its expiry has passed (its holder died); returns who holds it, for errors."""
    from mlflow.exceptions import MlflowException

    try:
        tags = dict(client.get_registered_model(lock).tags or {})
    except MlflowException as exc:
        if is_missing(exc):
            return "nobody (released just now)"
        raise RegistryError(f"MLflow registry at {_store(client)}: reading the lease {lock!r} failed: {exc.message}") from exc
    expires = float(tags.get(LOCK_EXPIRES_TAG) or 0)
    if expires < time.time():
        _release(client, lock, tags.get(LOCK_HOLDER_TAG, ""))
    return f"holder {tags.get(LOCK_HOLDER_TAG, '?')} until {time.strftime('%H:%M:%S', time.localtime(expires))}"


def _release(client: Any, lock: str, token: str) -> None:
    """Delete the lease if `token` still holds it (a lease broken after expiry belongs to someone else)."""
    from mlflow.exceptions import MlflowException

    try:
        if dict(client.get_registered_model(lock).tags or {}).get(LOCK_HOLDER_TAG) == token:
            client.delete_registered_model(lock)
    except MlflowException as exc:
        if not is_missing(exc):
            raise RegistryError(f"MLflow registry at {_store(client)}: releasing the promotion lease {lock!r} "
                                f"failed ({exc.message}); it expires by itself after {LEASE_S:.0f} s") from exc


def _apply(client: Any, decision: Decision) -> None:
    """Write the decision: tag (pre-commit), `champion` alias (the commit point), then bookkeeping."""
    name, version = decision.registered_model, decision.candidate_version
    if not decision.promote:
        with registry_call(client, f"recording the refusal of {name} v{version}"):
            client.set_model_version_tag(name, version, PROMOTION_TAG, "refused")
            client.set_model_version_tag(name, version, REASONS_TAG, "; ".join(decision.reasons))
        decision.applied = True
        return
    with registry_call(client, f"promoting {name} v{version} (champion was {_v(decision.champion_version)}; the "
                               f"aliases are unchanged unless the failed call reached the registry: rerun "
                               f"`duelguard promote --version {version}`, which finishes or redoes it)"):
        if decision.champion_version is not None:
            client.set_model_version_tag(name, version, REPLACED_TAG, decision.champion_version)
        elif REPLACED_TAG in (get_version(client, name, version).tags or {}):
            client.delete_model_version_tag(name, version, REPLACED_TAG)
        client.set_registered_model_alias(name, CHAMPION_ALIAS, version)
    with registry_call(client, f"finishing the promotion of {name} v{version} (it IS the champion now; "
                               f"rerun `duelguard promote --version {version}` to finish)"):
        client.set_model_version_tag(name, version, REASONS_TAG, "; ".join(c.detail for c in decision.checks))
        _finish_promotion(client, get_version(client, name, version))
    decision.applied = True


def _v(version: str | None) -> str:
    return f"v{version}" if version is not None else "unset"


def _finish_promotion(client: Any, champion: Any) -> bool:
    """After the `champion` alias moved: `previous` -> what it replaced, promotion tag. True if anything
    changed. Callers wrap it in registry_call (they know what state a failure leaves)."""
    name, version = champion.name, str(champion.version)
    tags = dict(champion.tags or {})
    replaced = tags.get(REPLACED_TAG)
    changed = False
    if replaced is not None:
        previous = alias_version(client, name, PREVIOUS)
        if previous is None or str(previous.version) != replaced:
            client.set_registered_model_alias(name, PREVIOUS, replaced)
            changed = True
    if tags.get(PROMOTION_TAG) != "promoted":
        client.set_model_version_tag(name, version, PROMOTION_TAG, "promoted")
        changed = True
    return changed


def rollback(params: Params, layout: Layout | None = None) -> dict[str, Any]:
    """Move `champion` back to the version it replaced; `previous` becomes what that one replaced.

    The target is the champion's duelguard.replaced_version tag (written before its promotion's
    commit point), so an interrupted promotion cannot send a rollback to a stale `previous`.
    """
    layout = layout or Layout.from_params(params)
    client = _client(params, layout.root)
    name = params.tracking.registered_model
    with _lease(client, name, "rolling back"):  # a concurrent promotion must not interleave with it
        return _rollback(client, name)


def _rollback(client: Any, name: str) -> dict[str, Any]:
    """rollback's reads and writes, under the lease."""
    champion = alias_version(client, name, CHAMPION_ALIAS)
    if champion is None:
        raise ModelNotFoundError(f"{name} has no '{CHAMPION_ALIAS}' alias: nothing to roll back")
    target = dict(champion.tags or {}).get(REPLACED_TAG)
    if target is None:
        raise ModelNotFoundError(f"{name} v{champion.version} replaced no version (no '{PREVIOUS}' alias): "
                                 "nothing to roll back to")
    restored = get_version(client, name, target)
    demoted = str(champion.version)
    with registry_call(client, f"rolling {name} back from v{demoted} to v{target} (check `{name}@{CHAMPION_ALIAS}` "
                               "before retrying: a rollback is relative)"):
        client.set_registered_model_alias(name, CHAMPION_ALIAS, target)
    older = dict(restored.tags or {}).get(REPLACED_TAG)
    with registry_call(client, f"finishing the rollback of {name} to v{target} (it IS the champion now)"):
        client.set_model_version_tag(name, demoted, PROMOTION_TAG, "rolled_back")
        if older is not None and older != demoted:
            client.set_registered_model_alias(name, PREVIOUS, older)
        else:
            client.delete_registered_model_alias(name, PREVIOUS)
            older = None
    return {"name": name, "champion": target, "demoted": demoted, "previous": older}


def promote_stage(params: Params, layout: Layout, iteration: int) -> dict[str, Any]:
    """Stage: promote the version registered for this iteration (if the rules allow); record the decision."""
    record = read_json(layout.registry_record(iteration))
    decision = promote(params, record["version"], layout=layout)
    out = decision.to_dict()
    out["iteration"] = iteration
    atomic_write_json(layout.promotion_record(iteration), json.loads(json.dumps(out, default=str)))
    return {"version": decision.candidate_version, "promoted": decision.promote, "reasons": decision.reasons,
            "champion": decision.candidate_version if decision.promote else decision.champion_version}
