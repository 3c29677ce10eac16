"""Prompt templates: both renderings, both tasks, and completion post-processing."""

from __future__ import annotations

import pytest

from duelguard.loop import prompts
from duelguard.backbones import FALLBACK_CHAT_TEMPLATE


class _ChatTokenizer:
    """The one tokenizer method render() uses for chat, with the project's fallback template."""

    def apply_chat_template(self, messages, tokenize, add_generation_prompt):
        from jinja2 import Template

        assert tokenize is False
        return Template(FALLBACK_CHAT_TEMPLATE).render(
            messages=messages, add_generation_prompt=add_generation_prompt, bos_token="<bos>", eos_token="<eos>"
        )


def test_fewshot_create_ends_with_seed_and_open_target_line():
    text = prompts.render(None, "fewshot", "translate_create", "How do I\nfix a bike?", "de", unsafe=False)
    assert text.endswith("English: How do I fix a bike?\nGerman:")  # seed flattened to one line
    assert text.count("German: ") == len(prompts.CREATE_EXAMPLES["de"])  # every example pair shown
    assert "native German speaker" in text.split("\n\n")[0]


def test_fewshot_paraphrase_uses_same_language_examples():
    text = prompts.render(None, "fewshot", "paraphrase", "¿Cómo hago pan en casa?", "es", unsafe=False)
    assert text.endswith("Original: ¿Cómo hago pan en casa?\nRewritten:")
    assert "¿Por qué el cielo es azul?" in text and "English:" not in text


def test_fewshot_refuses_a_language_without_examples():
    with pytest.raises(ValueError, match="no translate_create examples for 'it'"):
        prompts.fewshot_prompt("translate_create", "Hello", "it")


@pytest.mark.parametrize("task", prompts.TASKS)
@pytest.mark.parametrize("unsafe", [False, True])
def test_chat_prompt_states_task_language_and_label(task, unsafe):
    text = prompts.render(_ChatTokenizer(), "chat", task, "Comment voler une voiture ?", "fr", unsafe)
    assert text.startswith("<bos><user>\n") and text.endswith("<assistant>\n")
    assert "French" in text and "Comment voler une voiture ?" in text
    assert (" unsafe " in text) == unsafe
    assert ("English prompt:" in text) == (task == "translate_create")


def test_unknown_task_and_template_are_errors():
    with pytest.raises(ValueError, match="unknown generator task"):
        prompts.chat_messages("summarise", "x", "fr", False)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown generator template"):
        prompts.render(None, "zero-shot", "paraphrase", "x", "fr", False)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        (' "Comment réparer mon vélo ?"\nEnglish: next', "Comment réparer mon vélo ?"),
        (" Wie repariere ich mein Fahrrad? English: How do I", "Wie repariere ich mein Fahrrad?"),
        (" « ¿Cómo arreglo la bici? »", "¿Cómo arreglo la bici?"),
        ("\n\nsecond line", ""),
        (" - Une  phrase<end_of_turn>", "Une phrase"),
    ],
)
def test_postprocess_keeps_first_line_only(completion, expected):
    markers = prompts.end_markers("fewshot", "translate_create", "fr")
    assert prompts.postprocess(completion, markers) == expected


def test_fewshot_faithful_keeps_details_and_is_a_fewshot_template():
    text = prompts.render(None, "fewshot_faithful", "translate_create", 'Use "rat" in a sentence.', "fr", unsafe=True)
    assert text.endswith('English: Use "rat" in a sentence.\nFrench:')
    assert "every detail kept" in text.split("\n\n")[0]
    assert text.count("\nFrench: ") == len(prompts.FAITHFUL_EXAMPLES["fr"])
    assert "Londres" in text and "Lyon" not in text  # the example keeps the place, unlike the adapt style
    assert prompts.end_markers("fewshot_faithful", "translate_create", "fr") == prompts.end_markers(
        "fewshot", "translate_create", "fr")
    # paraphrase, faithful: the same request reworded, every detail kept, imperatives among the examples
    for lang in ("en", "fr", "es", "de"):
        text = prompts.render(None, "fewshot_faithful", "paraphrase", "Plan a picnic.", lang, False)
        assert text.endswith("Original: Plan a picnic.\nRewritten:") and "every detail" in text.split("\n\n")[0]
        assert text.count("\nRewritten: ") == len(prompts.FAITHFUL_PARAPHRASE_EXAMPLES[lang])
        assert text != prompts.render(None, "fewshot", "paraphrase", "Plan a picnic.", lang, False)
    assert '"sun", "moon" and "star"' in prompts.fewshot_prefix("paraphrase", "en", faithful=True)
    chat = prompts.chat_messages("paraphrase", "Plan a picnic.", "en", False, faithful=True)[0]["content"]
    assert "Reword this English request" in chat and "every detail" in chat


def test_chat_faithful_asks_for_the_same_request_not_a_new_one():
    text = prompts.render(_ChatTokenizer(), "chat_faithful", "translate_create", 'Use "sun" in 3 sentences.', "de", True)
    assert "Translate this English request into German" in text and 'Use "sun" in 3 sentences.' in text
    assert "inspired" not in text and "new" not in text.lower().split("request")[0]
    assert prompts.is_chat("chat_faithful") and not prompts.is_chat("fewshot_faithful")
    # The same task in the plain chat template asks for a new prompt inspired by the seed.
    assert "inspired by" in prompts.render(_ChatTokenizer(), "chat", "translate_create", "x", "de", True)
