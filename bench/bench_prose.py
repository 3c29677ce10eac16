"""Does everyday benign prose in fr/es/de, written by the loop's generator, lower a loop classifier's
false positives on benign text inside long context?

Measured on the long run's classifier 1 (README, "The long run"): a 1,000-word padding of everyday
benign text with no prompt in it is flagged 14-16 times in 20 in fr/es/de (the seed-only classifier:
0-4 in 20). The seed's fr/es/de rows are hate-speech tweets and templated statements, and the loop adds
requests; no training row is a paragraph of everyday text (a notice, a recipe step, a message), so every
scoring window of such text is out of the classifier's distribution. This bench:

1. `generate`: the loop's own generator and engine (duelguard.loop.generator.open_engine, the root's
   params) continue a few-shot list of everyday texts in each language (examples below, written for
   this bench; nothing from the suite), one line per sample; kept when langid agrees, it has at least
   MIN_WORDS words and is not a repeat. Rows are safe by construction (origin synthetic, task
   everyday_prose).
2. `train`: the iteration's classifier retrained on its own rows plus those rows, the way
   bench_loop_data trains every variant (training seeds random_seed, +1, ...), measured on both suite
   halves, plain and in context; results in bench/results/loop_data.json as variant `all+everyday_prose`.
   (Commit 172dd48 also tried the lines as context padding only, `--prose-share`: README, "The long run".
   Neither is kept: the head learns to score everyday-looking windows low, requests inside them too.)
3. `units`: how many everyday lines each classifier flags on their own (the suite's context sentences
   and adjacent pairs, and generated lines): the per-unit rate that long-text false positives multiply.

    python bench/bench_prose.py generate --root <long run> --per-language 500 --out /tmp/prose.jsonl
    python bench/bench_prose.py train --root <long run> --iteration 1 --prose /tmp/prose.jsonl --seeds 1
    python bench/bench_prose.py units --root <long run> --model <classifier dir> ... --prose /tmp/prose.jsonl
"""

from __future__ import annotations

import argparse
import json
import random
import re
from pathlib import Path
from typing import Any

MIN_WORDS = 8
TAG = re.compile(r"</?[a-zA-Z]+[^>]*>")  # a base model continuing web-like text writes HTML tags
LANGS = ("fr", "es", "de")
HEADER = {
    "fr": "Extraits de textes de tous les jours (messages, notices, recettes, annonces, courriels) :",
    "es": "Fragmentos de textos cotidianos (mensajes, avisos, recetas, anuncios, correos):",
    "de": "Auszüge aus Alltagstexten (Nachrichten, Hinweise, Rezepte, Ankündigungen, E-Mails):",
}
EXAMPLES: dict[str, tuple[str, ...]] = {
    "fr": (
        "Bonjour à tous, la réunion de jeudi est déplacée à 14 h dans la salle du deuxième étage.",
        "Faites revenir les oignons dans un peu de beurre, puis ajoutez les carottes coupées en rondelles.",
        "La bibliothèque municipale sera fermée lundi pour l'inventaire annuel ; les retours se font à la boîte extérieure.",
        "Salut Marie, on se retrouve samedi devant la gare ? Je pense arriver vers dix heures.",
        "Avant la première utilisation, rincez la carafe à l'eau claire et laissez sécher le filtre.",
        "Le marché de Noël ouvre ses portes le 1er décembre avec une quarantaine d'artisans de la région.",
        "Nous vous rappelons que le tri des emballages se fait désormais dans le bac jaune.",
        "Merci pour votre commande ; le colis sera livré sous trois jours ouvrés.",
    ),
    "es": (
        "Hola a todos, la reunión del jueves se traslada a las dos de la tarde en la sala del segundo piso.",
        "Sofríe la cebolla con un poco de aceite y añade después las zanahorias cortadas en rodajas.",
        "La biblioteca municipal cerrará el lunes por inventario; las devoluciones se hacen en el buzón exterior.",
        "¡Hola, Marta! ¿Quedamos el sábado delante de la estación? Creo que llegaré sobre las diez.",
        "Antes del primer uso, enjuague la jarra con agua limpia y deje secar el filtro.",
        "El mercado navideño abre sus puertas el 1 de diciembre con unos cuarenta artesanos de la zona.",
        "Les recordamos que los envases se depositan ahora en el contenedor amarillo.",
        "Gracias por su pedido; el paquete llegará en un plazo de tres días laborables.",
    ),
    "de": (
        "Hallo zusammen, das Treffen am Donnerstag wird auf 14 Uhr in den Raum im zweiten Stock verlegt.",
        "Die Zwiebeln in etwas Butter andünsten und danach die in Scheiben geschnittenen Karotten dazugeben.",
        "Die Stadtbibliothek bleibt am Montag wegen der Inventur geschlossen; Rückgaben bitte in den Außenkasten.",
        "Hallo Anna, treffen wir uns am Samstag vor dem Bahnhof? Ich bin wohl gegen zehn Uhr da.",
        "Vor dem ersten Gebrauch die Kanne mit klarem Wasser ausspülen und den Filter trocknen lassen.",
        "Der Weihnachtsmarkt öffnet am 1. Dezember mit rund vierzig Handwerkern aus der Region.",
        "Wir erinnern daran, dass Verpackungen jetzt in die gelbe Tonne gehören.",
        "Vielen Dank für Ihre Bestellung; das Paket wird innerhalb von drei Werktagen geliefert.",
    ),
}


def prompt(lang: str, rng: random.Random) -> str:
    """The header and four of the language's examples, in a random order, then an open item."""
    shown = rng.sample(EXAMPLES[lang], 4)
    return HEADER[lang] + "\n" + "".join(f"- {e}\n" for e in shown) + "- "


def generate(root: Path, per_language: int, out: Path, n: int = 4) -> None:
    from tqdm.auto import tqdm

    from duelguard.config import load_params
    from duelguard.langid import candidate_languages, identify
    from duelguard.layout import Layout
    from duelguard.loop.generator import open_engine

    params = load_params(root / "params.yaml")
    layout = Layout.from_params(params, root)
    engine, _, opened = open_engine(params, layout, None, params.generator.random_seed)
    rng = random.Random(params.generator.random_seed)
    candidates = candidate_languages(params.seed.languages)
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    drops = {"wrong_language": 0, "too_short": 0, "repeat": 0}
    for lang in LANGS:
        kept, calls = 0, 0
        with tqdm(total=per_language, desc=f"everyday prose {lang}") as bar:
            while kept < per_language and calls < 4 * per_language // n:
                prompts = [prompt(lang, rng) for _ in range(max(1, engine.parallel // n))]
                calls += len(prompts)
                for text in engine.complete(prompts, n=n):
                    text = TAG.sub("", text).strip().lstrip("- ").strip()
                    key = " ".join(text.lower().split())
                    if len(text.split()) < MIN_WORDS:
                        drops["too_short"] += 1
                    elif key in seen or any(key == " ".join(e.lower().split()) for e in EXAMPLES[lang]):
                        drops["repeat"] += 1
                    elif identify(text, candidates)[0] != lang:
                        drops["wrong_language"] += 1
                    elif kept < per_language:
                        seen.add(key)
                        rows.append({"id": f"prose-{lang}-{kept}", "text": text, "lang": lang, "labels": [0] * 12,
                                     "source": "synthetic", "split": "train", "origin": "synthetic", "iteration": 1,
                                     "task": "everyday_prose", "seed_source": None})
                        kept += 1
                        bar.update(1)
    out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    print(json.dumps({"kept": len(rows), "dropped": drops, "engine": opened.get("engine")}))


def train(root: Path, iteration: int, prose: Path, seeds: int) -> None:
    import bench_loop_data as bld

    extra = [json.loads(line) for line in prose.read_text().splitlines() if line.strip()]
    name = "all+everyday_prose"
    bld.VARIANTS[name] = ("iteration", lambda rows: rows + extra, {})
    result = bld.run_iteration(root.resolve(), iteration, seeds, [name])
    bld.save(iteration, result, f"python bench/bench_prose.py train --iteration {iteration} --seeds {seeds}",
             checkout=str(root), prose_rows=len(extra))


def units(root: Path, models: list[Path], prose: list[Path]) -> None:
    """How many everyday lines each classifier flags on their own: the suite's context sentences and
    adjacent pairs (duelguard.suite.variants.context_sentences; every padding is drawn from them) and
    the generated lines of `prose`, each scored as a short text at the model's own thresholds. A long
    text is flagged when any one of its ~100 units is, so a rate of a few per thousand here is what
    flags a third or more of 1,000-word benign texts. Results in bench/results/prose_units.json."""
    from bench_generator import cpu_isa

    from duelguard.classifier.loader import load_classifier
    from duelguard.config import load_params
    from duelguard.layout import Layout
    from duelguard.suite.variants import context_sentences

    cache = Layout.from_params(load_params(root / "params.yaml"), root).weights_cache
    lines = [json.loads(line) for path in prose for line in path.read_text().splitlines() if line.strip()]
    suite = {lang: list(context_sentences(lang)) for lang in ("en", *LANGS)}
    result: dict[str, Any] = {}
    for model in models:
        clf = load_classifier(model, cache)
        counts: dict[str, Any] = {}
        for lang, sents in suite.items():
            pairs = [f"{a} {b}" for a, b in zip(sents, sents[1:])]
            flagged = [p["unsafe"] for p in clf.predict_records([{"text": t} for t in sents + pairs])]
            counts[f"suite_{lang}"] = {"sentences": f"{sum(flagged[:len(sents)])}/{len(sents)}",
                                       "pairs": f"{sum(flagged[len(sents):])}/{len(pairs)}"}
        for lang in LANGS:
            texts = [r["text"] for r in lines if r["lang"] == lang]
            if texts:
                counts[f"generated_{lang}"] = f"{sum(p['unsafe'] for p in clf.predict_records([{'text': t} for t in texts]))}/{len(texts)}"
        result[str(model)] = {"threshold": round(float(clf.thresholds.max()), 4), **counts}
        print(model, json.dumps(counts), flush=True)
    out = Path(__file__).resolve().parent / "results" / "prose_units.json"
    results = json.loads(out.read_text()) if out.exists() else {}
    run = {"command": "python bench/bench_prose.py units --root <checkout> " + " ".join(f"--model {m}" for m in models)
           + " " + " ".join(f"--prose {p}" for p in prose), "cpu_isa": cpu_isa(), "prose_lines": len(lines)}
    results.update({k: {"run": run, **v} for k, v in result.items()})
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
    tmp.replace(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("generate")
    g.add_argument("--root", type=Path, required=True)
    g.add_argument("--per-language", type=int, default=500)
    g.add_argument("--out", type=Path, required=True)
    t = sub.add_parser("train")
    t.add_argument("--root", type=Path, required=True)
    t.add_argument("--iteration", type=int, required=True)
    t.add_argument("--prose", type=Path, required=True)
    t.add_argument("--seeds", type=int, default=1)
    u = sub.add_parser("units")
    u.add_argument("--model", type=Path, action="append", required=True, help="classifier directory (repeatable)")
    u.add_argument("--prose", type=Path, action="append", default=[], help="generated prose jsonl (repeatable)")
    u.add_argument("--root", type=Path, required=True, help="checkout whose weights cache to use")
    args = ap.parse_args()
    if args.cmd == "units":
        units(args.root, args.model, args.prose)
    elif args.cmd == "generate":
        generate(args.root, args.per_language, args.out)
    else:
        train(args.root, args.iteration, args.prose, args.seeds)


if __name__ == "__main__":
    main()
