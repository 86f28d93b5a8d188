#!/usr/bin/env python
"""Generate layerinf's embedded demo set: short English reviews, labelled positive or negative.

Everything here is written for this project: templates, vocabulary and filler sentences are original, and
the output is fully determined by ``SEED``. Run from the repository root::

    python scripts/make_demo_data.py            # writes src/layerinf/data/demo.jsonl

Design: five review domains (electronics, home, movies, books, places) with their own items, aspects and
neutral filler. Every positive adjective also appears negated in negative reviews ("not great") and every
negative adjective negated in positive ones ("not bad at all"), contrast sentences put the verdict after
"but", and label-free filler is shared by both classes, so no single word decides the label, while the
whole sentence always does.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

SEED = 20251106
N_TRAIN = 1400  # per split: half positive, half negative
N_DEV = 400
OUT = Path(__file__).resolve().parents[1] / "src" / "layerinf" / "data" / "demo.jsonl"

DOMAINS = {
    "electronics": {
        "items": ["these headphones", "the laptop", "this phone case", "the charger", "the keyboard",
                  "this speaker", "the camera", "the smartwatch", "the router", "this tablet", "the mouse"],
        "aspects": ["the battery", "the sound", "the screen", "the build quality", "the setup", "the touchpad",
                    "the connection", "the microphone", "the app", "the cable", "the fit"],
        "filler": ["I bought it last month.", "It arrived on a Tuesday.", "I use it every day at work.",
                   "This is my second one.", "I paid full price.", "It comes in three colors.",
                   "My brother suggested it.", "I got it as a gift."],
        "pos": ["sturdy", "reliable", "comfortable", "well made", "fast", "responsive"],
        "neg": ["flimsy", "cheap", "unreliable", "clumsy", "useless", "overpriced", "slow", "glitchy"],
        "pos_verb": ["I use {x} daily and love it", "I am glad I bought {x}"],
        "neg_verb": ["I returned {x}", "I regret buying {x}", "I wasted money on {x}"],
    },
    "home": {
        "items": ["this blender", "the coffee maker", "the frying pan", "this vacuum", "the desk lamp",
                  "the mattress", "this kettle", "the office chair", "the rug", "this toaster"],
        "aspects": ["the handle", "the motor", "the finish", "the cleanup", "the lid", "the cushion",
                    "the assembly", "the cord", "the noise level", "the design"],
        "filler": ["We moved into a new flat in May.", "It replaced an older model.", "The box was plain brown.",
                   "I ordered it online.", "We use it most mornings.", "It took a week to arrive.",
                   "My aunt has the same one."],
        "pos": ["sturdy", "reliable", "comfortable", "well made", "easy to clean", "quiet"],
        "neg": ["flimsy", "cheap", "unreliable", "clumsy", "useless", "overpriced", "noisy", "wobbly"],
        "pos_verb": ["I am glad I bought {x}", "we use {x} every day and love it"],
        "neg_verb": ["I returned {x}", "I regret buying {x}", "I wasted money on {x}"],
    },
    "movies": {
        "items": ["the movie", "this film", "the sequel", "the documentary", "this series", "the finale",
                  "the remake", "this comedy", "the thriller"],
        "aspects": ["the plot", "the acting", "the dialogue", "the soundtrack", "the pacing", "the ending",
                    "the cast", "the special effects", "the script", "the lead actor"],
        "filler": ["We watched it on a rainy Sunday.", "I saw it at the late showing.", "It runs about two hours.",
                   "A friend lent me the disc.", "I went in knowing nothing about it.",
                   "It is based on a short story."],
        "pos": ["gripping", "moving", "funny", "clever", "charming", "fresh"],
        "neg": ["boring", "dull", "predictable", "sloppy", "bland", "clumsy", "tedious", "silly"],
        "pos_verb": ["we adored {x}", "I would happily watch {x} again"],
        "neg_verb": ["I walked out of {x}", "we were bored by {x}", "I fell asleep during {x}"],
    },
    "books": {
        "items": ["this novel", "the book", "the memoir", "this cookbook", "the short story collection",
                  "the biography", "this guidebook"],
        "aspects": ["the writing", "the characters", "the story", "the recipes", "the last chapter",
                    "the translation", "the humor", "the structure", "the illustrations"],
        "filler": ["I read it on a long flight.", "It was a birthday present.", "Our book club picked it.",
                   "It is around three hundred pages.", "I finished it in a weekend.",
                   "I borrowed it from the library."],
        "pos": ["gripping", "moving", "funny", "clever", "charming", "thoughtful"],
        "neg": ["boring", "dull", "predictable", "sloppy", "bland", "tedious", "shallow", "confusing"],
        "pos_verb": ["I could not put down {x}", "I have reread {x} twice"],
        "neg_verb": ["I gave up on {x}", "I could not finish {x}", "I skimmed most of {x}"],
    },
    "places": {
        "items": ["the restaurant", "this cafe", "the hotel", "the diner", "this bakery", "the guesthouse",
                  "the pizza place"],
        "aspects": ["the staff", "the food", "the service", "the room", "the breakfast", "the coffee",
                    "the waiter", "the location", "the bread", "the view"],
        "filler": ["We went there for a birthday dinner.", "We stayed two nights.", "It is close to the station.",
                   "We had a table by the window.", "It was busy on a Friday.", "We booked a week ahead."],
        "pos": ["friendly", "cozy", "charming", "spotless", "fresh", "welcoming"],
        "neg": ["rude", "dirty", "overpriced", "bland", "cramped", "slow", "greasy", "stale"],
        "pos_verb": ["we will definitely return to {x}", "we were made to feel at home at {x}"],
        "neg_verb": ["we will never return to {x}", "we left {x} hungry and annoyed"],
    },
}

POS_ADJ = ["great", "excellent", "fantastic", "wonderful", "superb", "impressive", "delightful", "brilliant",
           "pleasant", "outstanding", "lovely", "a joy", "first rate", "terrific", "good"]
NEG_ADJ = ["terrible", "awful", "disappointing", "poor", "mediocre", "frustrating", "annoying", "a mess",
           "second rate", "forgettable", "bad", "weak"]
INTENS = ["really", "very", "truly", "incredibly", "surprisingly", "quite", "absolutely", "pretty", "genuinely",
          "remarkably", "so", "", "", ""]
POS_VERB = ["I love {x}", "I really like {x}", "I would happily recommend {x}", "I enjoyed {x}",
            "I was won over by {x}"]
NEG_VERB = ["I can't stand {x}", "I would not recommend {x}", "I was let down by {x}", "I did not enjoy {x}",
            "I have given up on {x}"]
POS_CLOSE = ["Would buy again.", "Five stars.", "Highly recommended.", "I would recommend it to anyone.",
             "Worth it.", "No regrets.", "Ten out of ten.", "Nothing to complain about."]
NEG_CLOSE = ["Would not buy again.", "One star.", "Avoid it.", "I would not recommend it to anyone.",
             "Not worth it.", "Big regret.", "Two out of ten.", "Nothing to recommend it."]


def _plural(noun: str) -> bool:
    return noun.endswith("s") and not noun.endswith("series")


def _be(rng: random.Random, noun: str, linking: bool = True) -> str:
    """A verb for ``noun``: is/are, was/were, or (``linking``) felt/seemed."""
    pl = _plural(noun)
    options = ["are" if pl else "is", "were" if pl else "was"]
    if linking:
        options += ["felt", "seemed"]
    return rng.choice(options)


def _words(dom: dict, positive: bool) -> list[str]:
    return (POS_ADJ + dom["pos"]) if positive else (NEG_ADJ + dom["neg"])


def _adj(rng: random.Random, words: list[str]) -> str:
    word = rng.choice(words)
    if " " in word:  # multi-word phrases take no intensifier
        return word
    inten = rng.choice(INTENS)
    return f"{inten} {word}" if inten else word


def _negated(rng: random.Random, words: list[str], of_positive: bool) -> str:
    """A negated adjective from ``words`` (so the phrase flips the adjective's polarity)."""
    word = rng.choice([w for w in words if " " not in w])
    forms = [f"not {word}", f"not {word} at all", f"never {word}", f"far from {word}"]
    if of_positive:  # "not very good" is negative; "not very bad" is not clearly positive
        forms += [f"not very {word}", f"hardly {word}", f"not particularly {word}"]
    return rng.choice(forms)


def _core(rng: random.Random, dom: dict, positive: bool) -> str:
    """One sentence whose polarity is ``positive``."""
    item, aspect = rng.choice(dom["items"]), rng.choice(dom["aspects"])
    good, bad = _words(dom, positive), _words(dom, not positive)
    form = rng.choices(["plain", "aspect", "verb", "negated", "contrast", "expect", "no_complaint"],
                       weights=[3, 3, 2, 3, 2, 1, 1])[0]
    if form == "plain":
        return f"{item} {_be(rng, item)} {_adj(rng, good)}."
    if form == "aspect":
        if rng.random() < 0.3:
            past = rng.random() < 0.5
            be = lambda n: ("were" if past else "are") if _plural(n) else ("was" if past else "is")  # noqa: E731
            return f"{aspect} {be(aspect)} {_adj(rng, good)}, and so {be(item)} {item}."
        return f"{aspect} of {item} {_be(rng, aspect)} {_adj(rng, good)}."
    if form == "verb":
        verbs = (POS_VERB + dom["pos_verb"]) if positive else (NEG_VERB + dom["neg_verb"])
        return rng.choice(verbs).format(x=item) + "."
    if form == "negated":
        target = rng.choice([item, aspect])
        return f"{target} {_be(rng, target, False)} {_negated(rng, bad, not positive)}."
    if form == "contrast":
        other = rng.choice([a for a in dom["aspects"] if a != aspect])
        if rng.random() < 0.5:
            return f"{other} {_be(rng, other)} {_adj(rng, bad)}, but overall {item} {_be(rng, item)} {_adj(rng, good)}."
        return (f"although {other} {_be(rng, other)} {_adj(rng, bad)}, "
                f"{item} {_be(rng, item)} {_adj(rng, good)} in the end.")
    if form == "expect":
        return f"I expected {item} to be {rng.choice([w for w in bad if ' ' not in w])}, " \
               f"but {'they' if _plural(item) else 'it'} turned out {_adj(rng, good)}."
    if positive:
        return rng.choice([f"I have no complaints about {aspect}.", f"I can't say anything bad about {item}.",
                           f"nothing about {aspect} disappointed me."])
    return rng.choice([f"I have nothing good to say about {aspect}.", f"I can't say anything nice about {item}.",
                       f"nothing about {aspect} impressed me."])


def _cap(sentence: str) -> str:
    return sentence[0].upper() + sentence[1:]


def review(rng: random.Random, positive: bool) -> str:
    """A review of 1-3 sentences: optional neutral filler, a verdict, optional second verdict or closer."""
    dom = DOMAINS[rng.choice(sorted(DOMAINS))]
    parts = []
    if rng.random() < 0.45:
        parts.append(rng.choice(dom["filler"]))
    parts.append(_core(rng, dom, positive))
    extra = rng.random()
    if extra < 0.3:
        parts.append(_core(rng, dom, positive))
    elif extra < 0.6:
        parts.append(rng.choice(POS_CLOSE if positive else NEG_CLOSE))
    if len(parts) == 1 and rng.random() < 0.5:
        parts.insert(0, rng.choice(dom["filler"]))
    return " ".join(_cap(p) for p in parts)


def generate(seed: int = SEED) -> list[dict]:
    rng = random.Random(seed)
    seen: set[str] = set()
    rows: list[dict] = []
    for split, n in (("train", N_TRAIN), ("dev", N_DEV)):
        for k in range(n):
            positive = k % 2 == 0
            while True:
                text = review(rng, positive)
                if text not in seen:
                    break
            seen.add(text)
            rows.append({"text": text, "label": "positive" if positive else "negative", "split": split})
    # shuffle within each split (deterministically), keep train before dev
    train = [r for r in rows if r["split"] == "train"]
    dev = [r for r in rows if r["split"] == "dev"]
    rng.shuffle(train)
    rng.shuffle(dev)
    return train + dev


def main(out: Path = OUT) -> None:
    rows = generate()
    blob = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(blob, encoding="utf-8")
    print(f"wrote {len(rows)} rows ({len(blob.encode()) / 1024:.0f} KB) to {out}", file=sys.stderr)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else OUT)
