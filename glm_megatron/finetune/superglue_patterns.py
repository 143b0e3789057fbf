"""GLM's pattern-verbalizer pairs for SuperGLUE (THUDM/GLM `tasks/superglue/pvp.py`), as data.

A pattern maps an example's fields to text parts around one MASK; parts made with
`shortenable` hold the example's own text (what `--truncate` may cut). A verbalizer maps each
label to its answer words. The default pattern id of each task is the one GLM's task configs
use (`config_tasks/task_*.sh`). GLM's continuous-prompt slots are left out (they are empty
without `--continuous-prompt`).
"""

from __future__ import annotations

import string

from .examples import MASK, shortenable


def strip_final_punctuation(text: str) -> str:
    return text.rstrip(string.punctuation)


def lowercase_first(text: str) -> str:
    return text[:1].lower() + text[1:]


YES_NO = {"false": " No", "true": " Yes"}


def boolq_pattern(fields: dict, pattern_id: int) -> list:
    passage, question = shortenable(fields["passage"]), shortenable(" " + fields["question"])
    if pattern_id in (0, 1):
        return [passage, " Question:", question, "? Answer:", MASK, "."]
    if pattern_id in (2, 3):
        return [passage, " Based on the previous passage,", question, "?", MASK, "."]
    return ["Based on the following passage", question, "?", MASK, ".",
            shortenable(" " + fields["passage"])]


def boolq_verbalizer(pattern_id: int) -> dict:
    return YES_NO if pattern_id % 2 == 0 else {"false": " false", "true": " true"}


def rte_pattern(fields: dict, pattern_id: int) -> list:
    premise = fields["premise"]
    hypothesis = strip_final_punctuation(fields["hypothesis"])
    if pattern_id == 0:
        return ['"', shortenable(hypothesis), '" ?', MASK, ",", ' "', shortenable(premise), '"']
    if pattern_id == 1:
        return [shortenable(hypothesis), "?", MASK, ",", shortenable(" " + premise)]
    if pattern_id == 2:
        return ['"', shortenable(hypothesis), '" ?', MASK, '. "', shortenable(premise), '"']
    if pattern_id == 3:
        return [shortenable(hypothesis), "?", MASK, ".", shortenable(" " + premise)]
    return [shortenable(premise), " question:", shortenable(" " + hypothesis),
            " True or False?", " answer:", MASK]


def rte_verbalizer(pattern_id: int) -> dict:
    if pattern_id == 4:
        return {"entailment": " true", "not_entailment": " false"}
    return {"entailment": " Yes", "not_entailment": " No"}


def cb_pattern(fields: dict, pattern_id: int) -> list:
    """RTE's patterns, except that pattern 4 asks a three-way question and keeps the
    hypothesis' final punctuation."""
    if pattern_id != 4:
        return rte_pattern(fields, pattern_id)
    return [shortenable(fields["premise"]), " question:", shortenable(" " + fields["hypothesis"]),
            " true, false or neither?", " answer:", MASK]


def cb_verbalizer(pattern_id: int) -> dict:
    if pattern_id == 4:
        return {"entailment": " true", "contradiction": " false", "neutral": " neither"}
    return {"entailment": " Yes", "contradiction": " No", "neutral": " Maybe"}


def wic_pattern(fields: dict, pattern_id: int) -> list:
    word, first, second = fields["word"], fields["sentence1"], fields["sentence2"]
    if pattern_id == 0:
        return [shortenable(f'"{first}" / "{second}"'), f' Similar sense of "{word}"?', MASK,
                "."]
    if pattern_id == 1:
        return [shortenable(first), shortenable(" " + second),
                f" Does {word} have the same meaning in both sentences?", MASK]
    return [word, " .", ' Sense (1) (a) "', shortenable(first), '"', " (", MASK, ') "', second,
            '"']


def wic_verbalizer(pattern_id: int) -> dict:
    return {"false": "2", "true": "b"} if pattern_id == 2 else YES_NO


def copa_choice(text: str) -> str:
    return strip_final_punctuation(lowercase_first(text))


def copa_pattern(fields: dict, pattern_id: int) -> list:
    premise = shortenable(strip_final_punctuation(" " + fields["premise"]))
    first, second = copa_choice(fields["choice1"]), copa_choice(fields["choice2"])
    joiner = " because" if fields["question"] == "cause" else ", so"
    if pattern_id == 0:
        return ['"', first, '" or "', second, '"?', premise, joiner, MASK, "."]
    return [first, " or", " " + second, "?", premise, joiner, MASK, "."]


def copa_answers(fields: dict) -> tuple:
    return (" " + copa_choice(fields["choice1"]), " " + copa_choice(fields["choice2"]))
