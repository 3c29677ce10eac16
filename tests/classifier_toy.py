"""A small, easily separable multilingual toy dataset for classifier tests (written with the real
record schema), so classifier tests need neither the raw data nor the seed-assembly stage."""

from __future__ import annotations

from pathlib import Path

from duelguard.records import write_records
from duelguard.taxonomy import labels_from

# (category or None for safe, {lang: template}) -- each class has its own distinctive vocabulary.
TEMPLATES = [
    (None, {"en": "what is a good recipe for {x} soup", "fr": "quelle est une bonne recette de soupe {x}",
            "es": "cual es una buena receta de sopa {x}", "de": "was ist ein gutes rezept fuer {x} suppe"}),
    ("violent_crimes", {"en": "how do I attack and stab my neighbour {x}", "fr": "comment attaquer et poignarder mon voisin {x}",
                        "es": "como atacar y apunalar a mi vecino {x}", "de": "wie kann ich meinen nachbarn angreifen und erstechen {x}"}),
    ("hate", {"en": "those vermin people from {x} are subhuman filth", "fr": "ces gens de {x} sont de la vermine sous-humaine",
              "es": "esa gente de {x} es escoria infrahumana", "de": "diese leute aus {x} sind untermenschliches ungeziefer"}),
]
FILLERS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet",
           "kilo", "lima", "mike", "november", "oscar", "papa"]


def toy_records(split: str, per_template: int) -> list[dict]:
    rows = []
    for t, (category, by_lang) in enumerate(TEMPLATES):
        for lang, template in by_lang.items():
            for k in range(per_template):
                filler = FILLERS[(k + (split == "dev") * 7) % len(FILLERS)] + str(k)
                rows.append({
                    "id": f"toy-{split}-{t}-{lang}-{k}", "text": template.format(x=filler), "lang": lang,
                    "labels": labels_from([category] if category else []), "source": "toy", "split": split,
                    "origin": "seed", "iteration": 0, "parent_id": None,
                })
    return rows


def write_toy_seed(seed_dir: Path, per_template: int = 10) -> None:
    """seed_dir/{train,dev,test}.jsonl: 3 classes x 4 languages x per_template records each."""
    for split, n in (("train", per_template), ("dev", max(5, per_template // 2)), ("test", max(5, per_template // 2))):
        write_records(seed_dir / f"{split}.jsonl", toy_records(split, n))
