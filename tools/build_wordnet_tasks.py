#!/usr/bin/env python
"""Build the small finetuning data sets shipped in data/finetune/wordnet/ from WordNet 3.0.

Reads the noun database of Debian's `wordnet-base` package (/usr/share/wordnet/data.noun;
`apt-get install wordnet-base`) and writes, deterministically for a given --seed:

- supersense_{train,valid}.jsonl (--task text-classification): {"text": a noun synset's
  definition, "label": its supersense}, for six well-separated supersenses (WordNet's
  lexicographer files noun.animal, noun.plant, noun.food, noun.artifact, noun.person,
  noun.location), the same number of examples per label;
- word_choice_{train,valid}.jsonl (--task multiple-choice): {"context": "[MASK]: " + a
  definition, "choices": four words, "label": the index of the synset's own word}. The three
  other words come from synsets of three other supersenses of the six, so a model can tell
  them apart by meaning; the right answer sits at each index equally often.
- LICENSE: WordNet's license, from the header of data.noun, which allows redistribution with
  this notice.
A definition is a synset's gloss without its quoted usage examples; synsets whose definition
has fewer than 3 or more than 30 words are left out. Words are the synset's
first lemma, when it is a lower-case word of 3-14 letters that its definition does not
contain. Train and valid synsets are disjoint. Every file is written beside its final name
and renamed when all are complete, so a failed run leaves the old files in place.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import sys
from dataclasses import dataclass

SUPERSENSES = {5: "animal", 6: "artifact", 13: "food", 15: "location", 18: "person",
               20: "plant"}
CHOICES = 4
# Definitions of 3-30 words: every example fits in 128 tokens of the built-in tokenizer.
MIN_WORDS, MAX_WORDS = 3, 30
_WORD = re.compile(r"^[a-z]{3,14}$")
_LICENSE_LINE = re.compile(r"^  +\d+ ?(.*?) *$")


@dataclass(frozen=True)
class Synset:
    offset: str
    supersense: str
    lemmas: tuple
    definition: str


def definition_of(gloss: str) -> str:
    """The gloss up to its first quoted usage example."""
    kept = []
    for segment in gloss.split(";"):
        if segment.strip().startswith('"'):
            break
        kept.append(segment.strip())
    return "; ".join(s for s in kept if s)


def read_noun_database(path: str) -> tuple:
    """(the license notice, the synsets of the chosen supersenses, in file order)."""
    notice, synsets = [], []
    with open(path, encoding="utf-8") as f:
        for line in f:
            header = _LICENSE_LINE.match(line)
            if header:
                notice.append(header.group(1))
                continue
            fields, _, gloss = line.partition(" | ")
            fields = fields.split()
            supersense = SUPERSENSES.get(int(fields[1]))
            if supersense is None:
                continue
            lemmas = tuple(fields[4:4 + 2 * int(fields[3], 16):2])
            definition = definition_of(gloss)
            if MIN_WORDS <= len(definition.split()) <= MAX_WORDS:
                synsets.append(Synset(fields[0], supersense, lemmas, definition))
    return "\n".join(notice).strip() + "\n", synsets


def answer_word(synset: Synset):
    """The synset's first lemma if it can be a multiple-choice answer, else None."""
    word = synset.lemmas[0]
    if not _WORD.match(word) or re.search(rf"\b{word}", synset.definition.lower()):
        return None
    return word


def split_by_label(synsets, per_label_train: int, per_label_valid: int, rng: random.Random):
    """Per supersense, a shuffled choice of train and then valid synsets."""
    train, valid = [], []
    for supersense in sorted(SUPERSENSES.values()):
        pool = [s for s in synsets if s.supersense == supersense]
        if len(pool) < per_label_train + per_label_valid:
            raise SystemExit(f"build_wordnet_tasks.py: only {len(pool)} usable {supersense} "
                             "synsets; lower --train-per-label / --valid-per-label")
        rng.shuffle(pool)
        train += pool[:per_label_train]
        valid += pool[per_label_train:per_label_train + per_label_valid]
    rng.shuffle(train)
    rng.shuffle(valid)
    return train, valid


def supersense_rows(synsets) -> list:
    return [{"text": s.definition, "label": s.supersense} for s in synsets]


def word_choice_rows(synsets, words_by_supersense: dict, rng: random.Random) -> list:
    # Every index holds the right answer equally often, in a shuffled order.
    labels = [n % CHOICES for n in range(len(synsets))]
    rng.shuffle(labels)
    rows = []
    for synset, label in zip(synsets, labels):
        answer = answer_word(synset)
        others = sorted(set(words_by_supersense) - {synset.supersense})
        distractors = []
        for supersense in rng.sample(others, CHOICES - 1):
            candidates = [w for w in words_by_supersense[supersense]
                          if w not in synset.lemmas and w not in distractors]
            distractors.append(rng.choice(candidates))
        choices = distractors[:label] + [answer] + distractors[label:]
        rows.append({"context": f"[MASK]: {synset.definition}", "choices": choices,
                     "label": label})
    return rows


def write_files(output_dir: str, files: dict):
    os.makedirs(output_dir, exist_ok=True)
    staged = []
    try:
        for name, text in files.items():
            path = os.path.join(output_dir, name)
            staged.append((f"{path}.tmp-{os.getpid()}", path))
            with open(staged[-1][0], "w", encoding="utf-8") as f:
                f.write(text)
        for tmp, path in staged:
            os.replace(tmp, path)
    finally:
        for tmp, _ in staged:
            if os.path.exists(tmp):
                os.unlink(tmp)


def json_lines(rows) -> str:
    return "".join(json.dumps(row) + "\n" for row in rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wordnet-dir", default="/usr/share/wordnet",
                        help="folder with WordNet's data.noun (Debian's wordnet-base)")
    parser.add_argument("--output-dir", default="data/finetune/wordnet")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--train-per-label", type=int, default=334)
    parser.add_argument("--valid-per-label", type=int, default=67)
    args = parser.parse_args(argv)
    database = os.path.join(args.wordnet_dir, "data.noun")
    if not os.path.isfile(database):
        print(f"build_wordnet_tasks.py: {database} not found; install WordNet 3.0 "
              "(apt-get install wordnet-base) or pass --wordnet-dir", file=sys.stderr)
        return 2
    notice, synsets = read_noun_database(database)
    rng = random.Random(args.seed)
    train, valid = split_by_label(synsets, args.train_per_label, args.valid_per_label, rng)
    answerable = [s for s in synsets if answer_word(s)]
    choice_train, choice_valid = split_by_label(answerable, args.train_per_label,
                                                args.valid_per_label, rng)
    # Distractors are drawn from every answerable synset; the right answer never is one.
    words = {}
    for s in answerable:
        words.setdefault(s.supersense, []).append(answer_word(s))
    words = {k: sorted(set(v)) for k, v in words.items()}
    write_files(args.output_dir, {
        "supersense_train.jsonl": json_lines(supersense_rows(train)),
        "supersense_valid.jsonl": json_lines(supersense_rows(valid)),
        "word_choice_train.jsonl": json_lines(word_choice_rows(choice_train, words, rng)),
        "word_choice_valid.jsonl": json_lines(word_choice_rows(choice_valid, words, rng)),
        "LICENSE": "The data in this folder is derived from WordNet 3.0 (Princeton "
                   "University), by tools/build_wordnet_tasks.py.\n\n" + notice})
    print(f"wrote {len(train)} + {len(valid)} supersense and {len(choice_train)} + "
          f"{len(choice_valid)} word-choice examples to {args.output_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
