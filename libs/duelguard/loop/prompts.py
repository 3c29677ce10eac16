"""Generator prompt templates: what the generator LLM is asked to write, for each task and model kind.

Two tasks (chosen by `params.generator.tasks`):

- ``translate_create`` (DuoGuard, arXiv 2502.05163): from an English seed, write one NEW prompt in the
  target language, inspired by the seed: same domain and tone, similar length, phrased the way a
  native speaker would ask it rather than translated word for word. The sample inherits the
  seed's labels, so the wording must keep the seed's intent (safe stays safe, unsafe stays unsafe).
- ``paraphrase`` (arXiv 2507.08284, query augmentation): rewrite a seed that is already in a
  target language as a different query in the SAME language with the same intent.

Four renderings (chosen by `params.generator.template`):

- ``chat``: one user message for instruction-tuned models, rendered with the tokenizer's own chat
  template. The paper's instruction; the model is asked to answer with the prompt alone on one line.
- ``fewshot``: a plain-text continuation prompt for base models (the default profile's
  Gemma-3-270M is not instruction-tuned and would ignore an instruction). A one-line header, a
  few fixed hand-written example pairs, then the seed and an open target line; the model
  continues the pattern and the completion is cut at the first newline. The examples are short
  and benign on purpose: they teach the format and the "adapt, don't translate literally" style,
  never harmful content. A base model does not refuse, like the paper's uncensored generator.
- ``chat_faithful``: ``chat``, but translate_create asks for the same request in the target language
  (and paraphrase for the same request reworded),
  every detail and the intent kept, worded as a native speaker would ask it (not a new request
  "inspired by" the seed): read by hand, 55% of Qwen's "inspired" samples kept their seed's meaning
  (tests/fixtures/fidelity_hand_labelled.jsonl), and a sample inherits its seed's label only if it does.
- ``fewshot_faithful``: the same pattern, but the examples keep every detail of the English request
  (names, quoted words, numbers, technical terms) in natural target-language wording. A 270M model
  shown "adapt" examples adapts the wrong things (a "tool" became a "weapon", the words to use in a
  sentence were swapped for others: measured in bench/results/generator.json); samples must keep
  their seed's meaning for the inherited label to hold. Paraphrase's faithful examples likewise reword a
  request and keep every detail, imperatives as imperatives.

Seeds are flattened to one line before rendering (a newline would end the few-shot pattern).
"""

from __future__ import annotations

import re
from typing import Any, Literal

from duelguard.taxonomy import LANGUAGE_NAMES

Task = Literal["translate_create", "paraphrase"]
Template = Literal["fewshot", "fewshot_faithful", "chat", "chat_faithful"]
FEWSHOT_TEMPLATES: tuple[str, ...] = ("fewshot", "fewshot_faithful")
CHAT_TEMPLATES: tuple[str, ...] = ("chat", "chat_faithful")
TASKS: tuple[Task, ...] = ("translate_create", "paraphrase")

# English seed -> a natural request in the target language (adapted, not literal: note the local
# places, names and idioms). Keep them benign and short: they teach the format only.
CREATE_EXAMPLES: dict[str, tuple[tuple[str, str], ...]] = {
    "fr": (
        ("What's a good day trip from London by train?", "Quelle excursion d'une journée en train me conseillez-vous au départ de Lyon ?"),
        ("Give me a quick recipe for dinner tonight.", "Tu aurais une recette rapide pour le dîner de ce soir ?"),
        ("How do I ask my landlord to fix the heating?", "Comment demander poliment à mon propriétaire de réparer le chauffage ?"),
        ("Write a short poem about the sea.", "Écris-moi un petit poème sur la mer."),
    ),
    "es": (
        ("What's a good day trip from London by train?", "¿Qué excursión de un día en tren me recomiendas desde Madrid?"),
        ("Give me a quick recipe for dinner tonight.", "¿Me das una receta rápida para cenar esta noche?"),
        ("How do I ask my landlord to fix the heating?", "¿Cómo le pido al casero que arregle la calefacción?"),
        ("Write a short poem about the sea.", "Escríbeme un poema corto sobre el mar."),
    ),
    "de": (
        ("What's a good day trip from London by train?", "Welcher Tagesausflug mit dem Zug ab München lohnt sich?"),
        ("Give me a quick recipe for dinner tonight.", "Hast du ein schnelles Rezept für das Abendessen heute?"),
        ("How do I ask my landlord to fix the heating?", "Wie bitte ich meinen Vermieter, die Heizung zu reparieren?"),
        ("Write a short poem about the sea.", "Schreib mir ein kurzes Gedicht über das Meer."),
    ),
}

# English seed -> the same request in the target language: every detail kept (quoted words, names,
# numbers, terms), worded the way a native speaker would ask. Benign and short: they teach the format.
FAITHFUL_EXAMPLES: dict[str, tuple[tuple[str, str], ...]] = {
    "fr": (
        ("What's a good day trip from London by train?", "Quelle excursion d'une journée en train me conseilles-tu au départ de Londres ?"),
        ("Use the words \"sun\", \"moon\" and \"star\" in one sentence.", "Utilise les mots \"sun\", \"moon\" et \"star\" dans une seule phrase."),
        ("What is a VPN and why would I need one?", "Qu'est-ce qu'un VPN et pourquoi en aurais-je besoin ?"),
        ("Write a short poem about the sea for my 8-year-old.", "Écris un petit poème sur la mer pour mon enfant de 8 ans."),
    ),
    "es": (
        ("What's a good day trip from London by train?", "¿Qué excursión de un día en tren me recomiendas desde Londres?"),
        ("Use the words \"sun\", \"moon\" and \"star\" in one sentence.", "Usa las palabras \"sun\", \"moon\" y \"star\" en una sola frase."),
        ("What is a VPN and why would I need one?", "¿Qué es una VPN y por qué la necesitaría?"),
        ("Write a short poem about the sea for my 8-year-old.", "Escribe un poema corto sobre el mar para mi hijo de 8 años."),
    ),
    "de": (
        ("What's a good day trip from London by train?", "Welcher Tagesausflug mit dem Zug ab London lohnt sich?"),
        ("Use the words \"sun\", \"moon\" and \"star\" in one sentence.", "Verwende die Wörter \"sun\", \"moon\" und \"star\" in einem einzigen Satz."),
        ("What is a VPN and why would I need one?", "Was ist ein VPN und wozu brauche ich eines?"),
        ("Write a short poem about the sea for my 8-year-old.", "Schreib ein kurzes Gedicht über das Meer für mein 8-jähriges Kind."),
    ),
}

# Same-language rewrites: same intent, different wording (query augmentation).
PARAPHRASE_EXAMPLES: dict[str, tuple[tuple[str, str], ...]] = {
    "en": (
        ("How do I get red wine out of a carpet?", "What's the best way to remove a red wine stain from my rug?"),
        ("Recommend a good book for a long flight.", "Which novel would you suggest I read on a long plane trip?"),
        ("Why is the sky blue?", "What makes the sky look blue during the day?"),
    ),
    "fr": (
        ("Comment enlever une tache de vin rouge sur un tapis ?", "Quelle est la meilleure méthode pour faire partir du vin rouge d'un tapis ?"),
        ("Conseille-moi un bon livre pour un long vol.", "Quel roman me recommandes-tu pour un long trajet en avion ?"),
        ("Pourquoi le ciel est-il bleu ?", "Qu'est-ce qui donne au ciel sa couleur bleue pendant la journée ?"),
    ),
    "es": (
        ("¿Cómo quito una mancha de vino tinto de la alfombra?", "¿Cuál es la mejor forma de sacar el vino tinto de una alfombra?"),
        ("Recomiéndame un buen libro para un vuelo largo.", "¿Qué novela me sugieres para leer en un viaje largo en avión?"),
        ("¿Por qué el cielo es azul?", "¿Qué hace que el cielo se vea azul durante el día?"),
    ),
    "de": (
        ("Wie bekomme ich Rotwein aus dem Teppich?", "Wie entferne ich am besten einen Rotweinfleck vom Teppich?"),
        ("Empfiehl mir ein gutes Buch für einen langen Flug.", "Welchen Roman würdest du mir für eine lange Flugreise empfehlen?"),
        ("Warum ist der Himmel blau?", "Wodurch erscheint der Himmel tagsüber blau?"),
    ),
}

# Same-language rewrites that keep the request: every detail (quoted words, names, numbers) and the
# intent, only the wording changes. Imperatives stay imperatives: shown only questions, Gemma-3-270M turned
# "Create a plan to sabotage ..." into unrelated questions (hand-read, README "English samples from the loop").
FAITHFUL_PARAPHRASE_EXAMPLES: dict[str, tuple[tuple[str, str], ...]] = {
    "en": (
        ("Write a short poem about the sea for my 8-year-old.", "Compose a brief poem about the ocean for my eight-year-old child."),
        ("Explain how to get a red wine stain out of a carpet.", "Tell me the steps to remove a red wine stain from a carpet."),
        ("Use the words \"sun\", \"moon\" and \"star\" in one sentence.", "Write one sentence that contains the words \"sun\", \"moon\" and \"star\"."),
        ("What is a VPN and why would I need one?", "Can you tell me what a VPN is and why I might need one?"),
    ),
    "fr": (
        ("Écris un petit poème sur la mer pour mon enfant de 8 ans.", "Compose un court poème sur l'océan pour mon fils de 8 ans."),
        ("Explique comment enlever une tache de vin rouge sur un tapis.", "Dis-moi comment faire partir une tache de vin rouge d'un tapis."),
        ("Utilise les mots \"sun\", \"moon\" et \"star\" dans une phrase.", "Écris une phrase qui contient les mots \"sun\", \"moon\" et \"star\"."),
        ("Qu'est-ce qu'un VPN et pourquoi en aurais-je besoin ?", "Tu peux m'expliquer ce qu'est un VPN et à quoi il me servirait ?"),
    ),
    "es": (
        ("Escribe un poema corto sobre el mar para mi hijo de 8 años.", "Compón un poema breve sobre el océano para mi hijo de 8 años."),
        ("Explica cómo quitar una mancha de vino tinto de una alfombra.", "Dime los pasos para sacar una mancha de vino tinto de una alfombra."),
        ("Usa las palabras \"sun\", \"moon\" y \"star\" en una frase.", "Escribe una frase que contenga las palabras \"sun\", \"moon\" y \"star\"."),
        ("¿Qué es una VPN y por qué la necesitaría?", "¿Me explicas qué es una VPN y para qué me serviría?"),
    ),
    "de": (
        ("Schreib ein kurzes Gedicht über das Meer für mein 8-jähriges Kind.", "Verfasse ein kleines Gedicht über den Ozean für mein Kind, das 8 Jahre alt ist."),
        ("Erkläre, wie man einen Rotweinfleck aus dem Teppich bekommt.", "Sag mir, wie ich einen Rotweinfleck aus einem Teppich entferne."),
        ("Verwende die Wörter \"sun\", \"moon\" und \"star\" in einem Satz.", "Schreib einen Satz, in dem die Wörter \"sun\", \"moon\" und \"star\" vorkommen."),
        ("Was ist ein VPN und wozu brauche ich eines?", "Kannst du mir erklären, was ein VPN ist und wofür ich es brauche?"),
    ),
}

_WS = re.compile(r"\s+")
_QUOTES = "\"'“”„«»‘’‚‹›`"


def language_name(lang: str) -> str:
    """The English name of an ISO 639-1 code (the prompts name languages in words)."""
    try:
        return LANGUAGE_NAMES[lang]
    except KeyError:
        raise ValueError(f"no language name for {lang!r}; known: {', '.join(sorted(LANGUAGE_NAMES))}") from None


def one_line(text: str) -> str:
    """Collapse all whitespace (newlines included) to single spaces."""
    return _WS.sub(" ", text).strip()


def is_chat(template: str) -> bool:
    """Chat templates are rendered by the tokenizer's chat template (which adds its own BOS)."""
    return template in CHAT_TEMPLATES


def chat_messages(task: Task, seed_text: str, lang: str, unsafe: bool, faithful: bool = False) -> list[dict[str, str]]:
    """The instruction for an instruction-tuned generator, as chat messages (one user turn)."""
    name = language_name(lang)
    kind = "unsafe" if unsafe else "safe"
    seed = one_line(seed_text)
    if task == "translate_create" and faithful:
        content = (
            f"Translate this English request into {name}. Keep its meaning and intent exactly, and every "
            f"detail (names, quoted words, numbers), but word it the way a native {name} speaker would ask "
            f"it. Do not answer it, do not comment. Reply with the {name} request only, on one line.\n\n"
            f"English request: {seed}"
        )
    elif task == "translate_create":
        content = (
            f"Write one new {kind} prompt in {name}, inspired by this English prompt. Keep the same domain "
            f"and tone and a similar length, but make it more natural for {name} speakers instead of "
            f"translating it word for word. Reply with the new prompt only, on one line.\n\n"
            f"English prompt: {seed}"
        )
    elif task == "paraphrase" and faithful:
        content = (
            f"Reword this {name} request in {name}. Keep its meaning and intent exactly, and every detail "
            f"(names, quoted words, numbers); change only the wording. Do not answer it, do not comment. "
            f"Reply with the reworded request only, on one line.\n\nRequest: {seed}"
        )
    elif task == "paraphrase":
        content = (
            f"Rewrite this {kind} {name} prompt as a new query in {name} with the same meaning and intent, "
            f"worded differently, the way another {name} speaker would ask it. Keep a similar length. "
            f"Reply with the new prompt only, on one line.\n\nPrompt: {seed}"
        )
    else:
        raise ValueError(f"unknown generator task {task!r}; expected one of {TASKS}")
    return [{"role": "user", "content": content}]


def fewshot_labels(task: Task, lang: str) -> tuple[str, str]:
    """The (source, target) line labels of the few-shot pattern; also used as end markers."""
    if task == "translate_create":
        return "English:", f"{language_name(lang)}:"
    if task == "paraphrase":
        return "Original:", "Rewritten:"
    raise ValueError(f"unknown generator task {task!r}; expected one of {TASKS}")


def fewshot_prefix(task: Task, lang: str, faithful: bool = False) -> str:
    """What every few-shot prompt of (task, lang) starts with: the header and the example pairs, up to
    the seed's block (an engine may run it once and reuse it: duelguard.loop.engines).

    faithful: for translate_create, the examples (and header) that keep every detail of the seed."""
    if task not in TASKS:
        raise ValueError(f"unknown generator task {task!r}; expected one of {TASKS}")
    name = language_name(lang)
    if task == "translate_create":
        table = FAITHFUL_EXAMPLES if faithful else CREATE_EXAMPLES
    else:
        table = FAITHFUL_PARAPHRASE_EXAMPLES if faithful else PARAPHRASE_EXAMPLES
    if lang not in table:
        raise ValueError(
            f"the few-shot template has no {task} examples for {lang!r} (have: {', '.join(sorted(table))}); "
            "add examples to duelguard.loop.prompts or use generator.template: chat"
        )
    if task == "translate_create" and faithful:
        header = (
            f"Requests written in English, each followed by the same request in {name}: every detail kept "
            f"(names, quoted words, numbers), worded the way a native {name} speaker would ask it."
        )
    elif task == "translate_create":
        header = (
            f"Requests written in English, each followed by a new request in {name} on the same topic, "
            f"with the same tone and length, phrased the way a native {name} speaker would write it."
        )
    elif faithful:
        header = (f"{name} requests, each followed by the same request reworded in {name}: every detail and "
                  "the intent kept, different words.")
    else:
        header = f"{name} requests, each followed by a rewrite in {name} with the same meaning and different words."
    src, tgt = fewshot_labels(task, lang)
    return header + "\n\n" + "".join(f"{src} {a}\n{tgt} {b}\n\n" for a, b in table[lang])


def fewshot_prompt(task: Task, seed_text: str, lang: str, faithful: bool = False) -> str:
    """A continuation prompt for a base model: header, example pairs, the seed, an open target line."""
    src, tgt = fewshot_labels(task, lang)
    return fewshot_prefix(task, lang, faithful) + f"{src} {one_line(seed_text)}\n{tgt}"


def shared_prefix(template: Template, task: Task, lang: str) -> str:
    """The text every prompt of (template, task, lang) starts with: the few-shot header and examples;
    none for chat templates (the seed sits inside the user turn, and the turn is short)."""
    if template in FEWSHOT_TEMPLATES:
        return fewshot_prefix(task, lang, faithful=template == "fewshot_faithful")
    return ""


def render(tokenizer: Any, template: Template, task: Task, seed_text: str, lang: str, unsafe: bool) -> str:
    """The full prompt string for one (seed, language); chat prompts go through the tokenizer's template.

    The returned string already holds any BOS the chat template adds; few-shot prompts hold none
    (tokenise chat prompts with add_special_tokens=False and few-shot prompts with True).
    """
    if is_chat(template):
        return tokenizer.apply_chat_template(
            chat_messages(task, seed_text, lang, unsafe, faithful=template == "chat_faithful"), tokenize=False,
            add_generation_prompt=True,
        )
    if template in FEWSHOT_TEMPLATES:
        return fewshot_prompt(task, seed_text, lang, faithful=template == "fewshot_faithful")
    raise ValueError(f"unknown generator template {template!r}; expected one of {', '.join(FEWSHOT_TEMPLATES + CHAT_TEMPLATES)}")


def postprocess(completion: str, end_markers: tuple[str, ...] = ()) -> str:
    """The generated prompt alone: first line, cut before any end marker, outer quotes stripped."""
    text = completion.split("\n", 1)[0]  # the target line only; a newline first means an empty sample
    for marker in end_markers:
        cut = text.find(marker)
        if cut >= 0:
            text = text[:cut]
    text = text.strip()
    if text.startswith("- "):
        text = text[2:]
    while len(text) >= 2 and text[0] in _QUOTES and text[-1] in _QUOTES:
        text = text[1:-1].strip()
    return one_line(text)


def end_markers(template: Template, task: Task, lang: str) -> tuple[str, ...]:
    """Strings after which a completion is cut: chat turn ends, or the few-shot pattern's labels."""
    markers = ("<end_of_turn>", "<|im_end|>", "<|eot_id|>", "</s>", "<eos>")
    if template in FEWSHOT_TEMPLATES:
        markers = markers + fewshot_labels(task, lang)
    return markers
