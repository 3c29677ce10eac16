"""Promotion rules as pure functions: metrics in, a decision with its reasons out.

A candidate replaces the champion only if, on the same frozen evaluation set (promotion.eval_split):
  1. its average unsafe-class F1 (mean over the target languages) rises by >= promotion.min_f1_delta;
  2. no language's unsafe-class F1 drops by more than promotion.max_lang_regression;
  3. its false-positive rate on benign data is <= promotion.max_benign_fpr, and (relative rule) <=
     the champion's FPR x promotion.max_fpr_ratio + promotion.fpr_slack: an absolute ceiling alone
     lets a candidate with equal F1 and 6x the champion's false positives through. The relative rule
     also holds for the look-alikes alone (safe prompts with alarming words: the suite's
     `fpr_lookalike`) and for the benign rows of each of promotion.guard_sets (`suite_context`: the
     suite's safe prompts inside benign context), where a loop model at an unchanged suite FPR can
     still flag several times more;
  4. (fail-open rule) on each of promotion.guard_sets, no language's unsafe recall falls below the
     champion's by more than promotion.max_guard_recall_drop: a candidate with better suite F1 once
     missed requests glued to a cut-off sentence (`suite_cut`) that the champion caught, and a guard
     that starts failing open where it used to hold is worse than one that never held. The allowance
     grows by promotion.guard_recall_per_fpr per point of that language's benign FPR on that set that
     the candidate gives back (a missed request weighs 1 / guard_recall_per_fpr blocked safe texts):
     without it the rule ratchets, since a champion that bought recall with false positives (a lower
     threshold) holds every later candidate to that recall, however much better it ranks;
  5. its average F1 beats its own probe's (the frozen-encoder + logistic-regression floor trained
     on the same rows) by >= promotion.min_probe_margin: a fine-tuned model that a three-minute
     linear probe matches is not worth serving.
With no champion yet, only rules 3 (its absolute part) and 5 apply (the first model must still be usable).
Before the alias moves, duelguard.registry.registry adds one more check (`loads`): the candidate is
exported and scored as serving would (duelguard.registry.loadcheck).
The metrics travel as registry version tags (`to_tags` / `from_tags`), so a promotion needs no
artefact besides the registry itself.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

from duelguard.config import Promotion
from duelguard.taxonomy import TARGET_LANGUAGES

TAG_PREFIX = "duelguard.metric"
EVAL_SET_TAG = "duelguard.eval_set_hash"
EPS = 1e-9  # float noise must not flip a rule that holds exactly at its limit


@dataclass(frozen=True)
class VersionMetrics:
    """What promotion compares: avg F1, F1 per language, benign FPR (all benign rows, and the suite's
    look-alikes alone), unsafe recall per language (the fail-open rule on guard sets), and which eval
    set gave them."""

    avg_f1: float | None
    f1_by_lang: dict[str, float]
    benign_fpr: float | None
    eval_set_hash: str | None = None
    probe_avg_f1: float | None = None
    lookalike_fpr: float | None = None
    recall_by_lang: dict[str, float] = field(default_factory=dict)
    fpr_by_lang: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_summary(cls, summary: dict[str, Any], eval_set_hash: str | None) -> VersionMetrics:
        """From one set's flat summary in the eval metrics JSON (keys avg_f1, f1_<lang>, recall_<lang>, fpr,
        fpr_<lang>, probe_avg_f1, and fpr_lookalike on the suite)."""
        return cls(summary.get("avg_f1"), _per_lang(summary, "f1_"), summary.get("fpr"), eval_set_hash,
                   summary.get("probe_avg_f1"), summary.get("fpr_lookalike"), _per_lang(summary, "recall_"),
                   _per_lang(summary, "fpr_"))

    def to_tags(self, split: str) -> dict[str, str]:
        tags = {f"{TAG_PREFIX}.{split}.avg_f1": _fmt(self.avg_f1), f"{TAG_PREFIX}.{split}.benign_fpr": _fmt(self.benign_fpr),
                f"{TAG_PREFIX}.{split}.probe_avg_f1": _fmt(self.probe_avg_f1)}
        if self.lookalike_fpr is not None:
            tags[f"{TAG_PREFIX}.{split}.lookalike_fpr"] = _fmt(self.lookalike_fpr)
        tags.update({f"{TAG_PREFIX}.{split}.f1_{lang}": _fmt(v) for lang, v in self.f1_by_lang.items()})
        tags.update({f"{TAG_PREFIX}.{split}.recall_{lang}": _fmt(v) for lang, v in self.recall_by_lang.items()})
        tags.update({f"{TAG_PREFIX}.{split}.fpr_{lang}": _fmt(v) for lang, v in self.fpr_by_lang.items()})
        if self.eval_set_hash:
            tags[f"{EVAL_SET_TAG}.{split}"] = self.eval_set_hash
        return tags

    @classmethod
    def from_tags(cls, tags: dict[str, str], split: str) -> VersionMetrics | None:
        """None when the version carries no metrics for `split`."""
        prefix = f"{TAG_PREFIX}.{split}."
        if prefix + "avg_f1" not in tags:
            return None
        in_split = {k[len(prefix):]: _parse(v) for k, v in tags.items() if k.startswith(prefix)}
        return cls(
            _parse(tags[prefix + "avg_f1"]),
            _per_lang(in_split, "f1_"),
            _parse(tags.get(prefix + "benign_fpr", "")),
            tags.get(f"{EVAL_SET_TAG}.{split}"),
            _parse(tags.get(prefix + "probe_avg_f1", "")),
            _parse(tags.get(prefix + "lookalike_fpr", "")),
            _per_lang(in_split, "recall_"),
            _per_lang(in_split, "fpr_"),
        )


def _per_lang(flat: dict[str, Any], prefix: str) -> dict[str, float]:
    """{lang: value} of the defined `<prefix><lang>` keys of a flat summary (`f1_`, `recall_`, `fpr_`):
    a language code is letters only (`fpr_lookalike` and `fpr_lookalike_en` are groups, not languages)."""
    return {k[len(prefix):]: float(v) for k, v in flat.items()
            if k.startswith(prefix) and v is not None and _LANG_CODE.fullmatch(k[len(prefix):])}


_LANG_CODE = re.compile(r"[a-z]{2,3}")


def _fmt(v: float | None) -> str:
    return "" if v is None else f"{v:.6f}"


def _parse(v: str) -> float | None:
    return float(v) if v not in ("", "None") else None


@dataclass(frozen=True)
class Check:
    rule: str
    passed: bool
    detail: str


@dataclass
class Decision:
    """The outcome of one promotion attempt (what --dry-run prints; what the promote stage writes)."""

    registered_model: str
    candidate_version: str
    champion_version: str | None
    promote: bool
    checks: list[Check] = field(default_factory=list)
    candidate_metrics: VersionMetrics | None = None
    champion_metrics: VersionMetrics | None = None
    dry_run: bool = False
    applied: bool = False
    note: str = ""

    @property
    def reasons(self) -> list[str]:
        """Why it was refused (the failed checks), or empty."""
        return [c.detail for c in self.checks if not c.passed]

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["reasons"] = self.reasons
        return out

    def describe(self) -> str:
        verdict = "PROMOTE" if self.promote else "REFUSE"
        against = f"champion v{self.champion_version}" if self.champion_version else "no champion yet"
        lines = [f"{self.registered_model} v{self.candidate_version} vs {against}: {verdict}"
                 + (" (dry run: nothing changed)" if self.dry_run else "")]
        lines += [f"  [{'ok' if c.passed else 'FAIL'}] {c.rule}: {c.detail}" for c in self.checks]
        if self.note:
            lines.append(f"  note: {self.note}")
        return "\n".join(lines)


def _f(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.4f}"


def check_rules(candidate: VersionMetrics, champion: VersionMetrics | None, rules: Promotion,
                guards: dict[str, tuple[VersionMetrics, VersionMetrics | None]] | None = None) -> list[Check]:
    """Evaluate every promotion rule; each Check says what was compared and against which limit.
    `guards`: per guard set (promotion.guard_sets), the candidate's and the champion's metrics there."""
    checks: list[Check] = []
    if champion is not None:
        if candidate.avg_f1 is None or champion.avg_f1 is None:
            checks.append(Check("min_f1_delta", False,
                                f"avg F1 undefined (candidate {_f(candidate.avg_f1)}, champion {_f(champion.avg_f1)})"))
        else:
            delta = candidate.avg_f1 - champion.avg_f1
            checks.append(Check(
                "min_f1_delta", delta + EPS >= rules.min_f1_delta,
                f"avg F1 {champion.avg_f1:.4f} -> {candidate.avg_f1:.4f} (delta {delta:+.4f}, need >= {rules.min_f1_delta:+.4f})",
            ))
        langs = [lang for lang in TARGET_LANGUAGES if lang in champion.f1_by_lang]
        langs += sorted(set(champion.f1_by_lang) - set(TARGET_LANGUAGES))
        for lang in langs:
            before = champion.f1_by_lang[lang]
            after = candidate.f1_by_lang.get(lang)
            if after is None:
                checks.append(Check(f"max_lang_regression[{lang}]", False,
                                    f"{lang}: champion F1 {before:.4f}, candidate has no F1 for {lang}"))
                continue
            drop = before - after
            checks.append(Check(
                f"max_lang_regression[{lang}]", drop <= rules.max_lang_regression + EPS,
                f"{lang}: F1 {before:.4f} -> {after:.4f} (drop {drop:+.4f}, allowed <= {rules.max_lang_regression:.4f})",
            ))
    if candidate.benign_fpr is None:
        checks.append(Check("max_benign_fpr", False, "benign FPR undefined: the eval set has no benign examples"))
    else:
        checks.append(Check(
            "max_benign_fpr", candidate.benign_fpr <= rules.max_benign_fpr + EPS,
            f"benign FPR {candidate.benign_fpr:.4f} (limit {rules.max_benign_fpr:.4f})",
        ))
    if champion is not None:
        if candidate.benign_fpr is not None:
            checks.append(_relative_fpr("max_fpr_ratio", "benign FPR", candidate.benign_fpr, champion.benign_fpr, rules))
        if candidate.lookalike_fpr is not None:  # the suite has look-alikes; the seed's test split has none
            checks.append(_relative_fpr("max_fpr_ratio[lookalike]", "look-alike FPR", candidate.lookalike_fpr,
                                        champion.lookalike_fpr, rules))
        for name, (cand_guard, champ_guard) in (guards or {}).items():
            checks.append(_relative_fpr(f"max_fpr_ratio[{name}]", f"{name} benign FPR", cand_guard.benign_fpr,
                                        None if champ_guard is None else champ_guard.benign_fpr, rules))
            checks += _recall_drops(name, cand_guard, champ_guard, rules)
    if candidate.avg_f1 is None or candidate.probe_avg_f1 is None:
        checks.append(Check("beats_probe", False, f"avg F1 {_f(candidate.avg_f1)} or its probe's "
                                                  f"{_f(candidate.probe_avg_f1)} undefined: evaluate it with its probe"))
    else:
        margin = candidate.avg_f1 - candidate.probe_avg_f1
        checks.append(Check(
            "beats_probe", margin + EPS >= rules.min_probe_margin,
            f"avg F1 {candidate.avg_f1:.4f} vs its probe {candidate.probe_avg_f1:.4f} "
            f"(margin {margin:+.4f}, need >= {rules.min_probe_margin:+.4f})",
        ))
    return checks


def _relative_fpr(rule: str, what: str, candidate_fpr: float | None, champion_fpr: float | None,
                  rules: Promotion) -> Check:
    """Candidate FPR <= champion FPR x max_fpr_ratio + fpr_slack. Why relative: the absolute ceiling is
    sized for a usable model, not against regressions, so alone it promotes a candidate with equal F1
    and several times the champion's false positives. A missing FPR on either side cannot bound it:
    refused, never skipped (a guard that is not measured must not pass)."""
    if candidate_fpr is None or champion_fpr is None:
        side = "candidate" if candidate_fpr is None else "champion"
        return Check(rule, False, f"{what}: the {side} has none (candidate {_f(candidate_fpr)}, champion "
                                  f"{_f(champion_fpr)}): re-evaluate it on that set")
    limit = champion_fpr * rules.max_fpr_ratio + rules.fpr_slack
    return Check(
        rule, candidate_fpr <= limit + EPS,
        f"{what} {champion_fpr:.4f} -> {candidate_fpr:.4f} (limit champion x {rules.max_fpr_ratio:g} + "
        f"{rules.fpr_slack:g} = {limit:.4f})",
    )


def _recall_drops(name: str, candidate: VersionMetrics, champion: VersionMetrics | None,
                  rules: Promotion) -> list[Check]:
    """The fail-open rule on guard set `name`: per language, candidate unsafe recall >= champion's -
    (max_guard_recall_drop + guard_recall_per_fpr x the benign FPR the candidate gives back there).
    Unmeasured recall on either side is refused, never skipped; an unmeasured FPR earns no allowance."""
    rule = f"max_guard_recall_drop[{name}]"
    if champion is None or not champion.recall_by_lang:
        return [Check(rule, False, f"{name}: the champion has no unsafe recall per language: re-evaluate it on that set")]
    checks = []
    for lang in [x for x in TARGET_LANGUAGES if x in champion.recall_by_lang] + sorted(
            set(champion.recall_by_lang) - set(TARGET_LANGUAGES)):
        before, after = champion.recall_by_lang[lang], candidate.recall_by_lang.get(lang)
        if after is None:
            checks.append(Check(f"{rule}[{lang}]", False, f"{name} {lang}: champion unsafe recall {before:.4f}, "
                                                          "the candidate has none"))
            continue
        drop, allowed, why = before - after, rules.max_guard_recall_drop, ""
        fpr_before, fpr_after = champion.fpr_by_lang.get(lang), candidate.fpr_by_lang.get(lang)
        if fpr_before is not None and fpr_after is not None and fpr_after < fpr_before and rules.guard_recall_per_fpr:
            allowed += rules.guard_recall_per_fpr * (fpr_before - fpr_after)
            why = (f" + {rules.guard_recall_per_fpr:g} x benign FPR given back {fpr_before:.4f} -> {fpr_after:.4f}"
                   f" = {allowed:.4f}")
        checks.append(Check(
            f"{rule}[{lang}]", drop <= allowed + EPS,
            f"{name} {lang}: unsafe recall {before:.4f} -> {after:.4f} (drop {drop:+.4f}, "
            f"allowed <= {rules.max_guard_recall_drop:.4f}{why})",
        ))
    return checks
