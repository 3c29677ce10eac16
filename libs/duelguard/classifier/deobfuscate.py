"""Undo the cheap disguises that walk an unsafe request past a classifier, before it is scored.

A guard that scores the characters it is given can be bypassed without changing what a reader (or
the guarded LLM) sees: zero-width characters between the letters ("b\u200bo\u200bm\u200bb"), look-alike
letters from another script (Cyrillic "а" for Latin "a"), full-width or mathematical forms
("ｂｏｍｂ", "𝐛𝐨𝐦𝐛") and letters spaced out ("b o m b", "b.o.m.b"). `fold` maps each of those back
to the plain text, and every scorer (predict, evaluation, the pyfunc model, Triton) scores the
folded text (duelguard.classifier.units), so the disguise costs the attacker nothing and us nothing.

What it does, in order (each step leaves ordinary text of any script unchanged):
1. drops invisible format characters (Unicode category Cf: zero-width space/joiners, word joiner,
   BOM, soft hyphen, bidi controls) and variation selectors;
2. NFKC: full-width, mathematical, circled, ligature and superscript forms become plain letters,
   and accents are composed; combining marks still left on a Latin, Greek or Cyrillic letter are
   decoration ("zalgo" text) and are dropped;
3. look-alikes: a Cyrillic or Greek letter that looks like a Latin one becomes that Latin letter
   inside a word that also holds Latin letters (a mixed-script word is never honest text), and in
   words written wholly in look-alikes when most of the text's unambiguous letters are Latin (so
   Russian or Greek text stays Russian or Greek);
4. spaced-out letters: a run of three or more single letters joined by one space or by one of
   SEPARATORS ("b o m b", "b-o-m-b") becomes one word; words of such text are usually set apart by
   a wider gap, which is kept as the word boundary.
Finally whitespace runs are collapsed to one space, or to one line break where they hold one (a
line break ends a sentence for duelguard.classifier.units).
"""

from __future__ import annotations

import re
import unicodedata

# Letters of other scripts that render like a Latin letter (Unicode's confusables, the ones that
# matter for Cyrillic and Greek). Keys are single characters; values the Latin look-alike.
CONFUSABLES: dict[str, str] = {
    # Cyrillic lower case
    "а": "a", "в": "b", "е": "e", "ё": "e", "һ": "h", "і": "i", "ї": "i", "ј": "j", "к": "k", "м": "m",
    "н": "h", "о": "o", "р": "p", "с": "c", "ѕ": "s", "т": "t", "у": "y", "х": "x", "ԁ": "d", "ԛ": "q",
    "ԝ": "w", "ӏ": "l", "ү": "y", "ѵ": "v", "ɡ": "g",
    # Cyrillic upper case
    "А": "A", "В": "B", "Е": "E", "Ё": "E", "Н": "H", "І": "I", "Ї": "I", "Ј": "J", "К": "K", "М": "M",
    "О": "O", "Р": "P", "С": "C", "Ѕ": "S", "Т": "T", "У": "Y", "Х": "X", "Ԁ": "D", "Ԛ": "Q", "Ԝ": "W",
    "Ү": "Y", "Ӏ": "I",
    # Greek
    "α": "a", "ε": "e", "ι": "i", "κ": "k", "ν": "v", "ο": "o", "ρ": "p", "τ": "t", "υ": "u", "χ": "x",
    "γ": "y", "Α": "A", "Β": "B", "Ε": "E", "Ζ": "Z", "Η": "H", "Ι": "I", "Κ": "K", "Μ": "M", "Ν": "N",
    "Ο": "O", "Ρ": "P", "Τ": "T", "Υ": "Y", "Χ": "X",
}
SEPARATORS = ".-_*·|/+~"

_VARIATION_SELECTORS = re.compile("[\ufe00-\ufe0f\U000e0100-\U000e01ef\u034f]")
_WORD = re.compile(r"[^\W\d_]+", re.UNICODE)
_LETTER = r"[^\W\d_]"
# Three or more single letters joined by one space (not two: a wider gap is the word boundary).
_SPACED = re.compile(rf"(?<!\S){_LETTER}(?: {_LETTER}){{2,}}(?!\S)")
# Once a text is seen spaced out, every run of single characters is a word ("t o", "W h a t ' s").
_SPACED_ANY = re.compile(r"(?<!\S)\S(?: \S)+(?!\S)")
# ... or joined by the same one separator character ("b.o.m.b", "b-o-m-b").
_JOINED = re.compile(rf"(?<![^\W_]){_LETTER}([{re.escape(SEPARATORS)}]){_LETTER}(?:\1{_LETTER})+(?![^\W_])")
_SPACES = re.compile(r"[^\S\n]+")
_LINES = re.compile(r" ?\n[\s]*")


def _drop_invisible(text: str) -> str:
    """Remove format characters (Cf) and variation selectors."""
    return _VARIATION_SELECTORS.sub("", "".join(ch for ch in text if unicodedata.category(ch) != "Cf"))


def _drop_decoration(text: str) -> str:
    """Strip combining marks left on Latin, Greek or Cyrillic letters after NFKC composed every real
    accent of those scripts ("zalgo" strike-through and stacked marks); other scripts keep theirs."""
    out: list[str] = []
    base = ""
    for ch in text:
        if unicodedata.combining(ch):
            if base and _is_alphabetic_script(base):
                continue
        else:
            base = ch
        out.append(ch)
    return "".join(out)


def _is_alphabetic_script(ch: str) -> bool:
    name = unicodedata.name(ch, "")
    return ch.isascii() or name.startswith(("LATIN", "GREEK", "CYRILLIC"))


def _is_latin(ch: str) -> bool:
    return ch.isascii() and ch.isalpha() or unicodedata.name(ch, "").startswith("LATIN")


def _fold_confusables(text: str) -> str:
    """Map look-alike letters to Latin in mixed-script words, and in all-look-alike words of Latin text."""
    letters = [ch for ch in text if ch.isalpha()]
    if not letters or not any(ch in CONFUSABLES for ch in letters):
        return text
    # Judge the text's script by its unambiguous letters: look-alikes could be either.
    unambiguous = [ch for ch in letters if ch not in CONFUSABLES]
    mostly_latin = sum(_is_latin(ch) for ch in unambiguous) > len(unambiguous) / 2

    def fold_word(match: re.Match[str]) -> str:
        word = match.group(0)
        lookalikes = sum(ch in CONFUSABLES for ch in word)
        if not lookalikes:
            return word
        latin = sum(_is_latin(ch) for ch in word)
        if latin or (mostly_latin and lookalikes == len(word)):
            return "".join(CONFUSABLES.get(ch, ch) for ch in word)
        return word

    return _WORD.sub(fold_word, text)


def _join_spaced(text: str) -> str:
    """Collapse spaced-out or separator-joined single letters into words (see the module docstring).
    Once a text is seen spaced out (a run of three or more letters), every run of single characters
    is a word ("t o", "W h a t ' s")."""
    if _SPACED.search(text):
        text = _SPACED_ANY.sub(lambda m: m.group(0).replace(" ", ""), text)
    return _JOINED.sub(lambda m: m.group(0).replace(m.group(1), ""), text)


def fold(text: str) -> str:
    """The text a scorer should see: invisible characters dropped, compatibility forms, look-alike
    letters and spaced-out letters folded, whitespace collapsed, line breaks kept (see the module docstring)."""
    if not text.isascii():
        text = _fold_confusables(_drop_decoration(unicodedata.normalize("NFKC", _drop_invisible(text))))
    return _LINES.sub("\n", _SPACES.sub(" ", _join_spaced(text))).strip()
