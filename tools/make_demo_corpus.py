"""Generates the small synthetic demo corpus used by ``kmtl demo``.

Every sentence is composed here from hand-written templates and filler lists (names,
companies, places, products, adjectives, ...); nothing is copied from an existing data set.
The output is deterministic for a given ``--seed``.

Usage (from the repository root)::

    python tools/make_demo_corpus.py [--out DIR] [--seed N]

Writes, under ``DIR`` (default: ``kmtl/demo/corpus/``, the data ``kmtl demo`` ships; the
builder is not part of the installed package: tests/test_demo_corpus.py checks that running it
reproduces the shipped files byte for byte)::

    sentiment/train.tsv   sentiment/dev.tsv     sentence<TAB>label  (negative|positive)
    paraphrase/train.tsv  paraphrase/dev.tsv    sentence1<TAB>sentence2<TAB>label  (paraphrase|different)
    entities/train.conll  entities/dev.conll    token<TAB>tag per line, blank line between sentences

About 20% of the person names, companies, places (and a few other fillers) are held out of
train and used only in dev, so dev scores measure generalisation to unseen names. No sentence
in dev also occurs in train.
"""

from __future__ import annotations

import argparse
import random
import re
import sys
from pathlib import Path
from typing import Callable, Dict, List, Sequence, Set, Tuple

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "kmtl" / "demo" / "corpus"
DEFAULT_SEED = 2024
SIZES = {"train": 300, "dev": 100}
HOLDOUT = 0.2  # share of each name pool used only in dev
DEV_NEW = 0.5  # chance that a dev slot takes a held-out filler

# ---------------------------------------------------------------------------------------------
# Shared filler pools (all invented; place names are real places, organisations are fictional)
# ---------------------------------------------------------------------------------------------

FIRST_NAMES = [
    "José", "Zoë", "Søren", "Chiara", "Aiko", "Kwame", "Priya", "Mateus", "Ingrid", "Olumide",
    "Hana", "Lukas", "Fatima", "Diego", "Mei", "Tomasz", "Amara", "Rafael", "Elena", "Yusuf",
    "Nadia", "Oskar", "Leila", "Marco", "Sofia", "Kenji", "Anya", "Tariq", "Ruth", "Samuel",
    "Björn", "Inés", "Dmitri", "Grace", "Henrik", "Isabel", "Jamal", "Keiko", "Liam", "Noor",
    "Clara", "Femi", "Astrid", "Paolo", "Meera", "Jonas", "Lucía", "Ahmed", "Wen", "Helen",
]
LAST_NAMES = [
    "García", "Okafor", "Nakamura", "Lindqvist", "Müller", "Haddad", "Kowalski", "Patel",
    "Moreau", "Rossi", "Chen", "Adeyemi", "Novak", "Fernández", "Johansson", "O'Brien", "Silva",
    "Kim", "Schmidt", "Dubois", "Mensah", "Ivanova", "Costa", "Larsen", "Tanaka", "Bianchi",
    "Kaya", "Petrov", "Nguyen", "Walsh", "van der Berg", "Al-Masri", "Hughes", "Sato", "Da Silva",
    "Bergström", "Owusu", "Romano", "Keller", "Yilmaz", "Park", "Horvat", "Ortega", "Achebe",
    "Lund", "Baptiste", "Reyes", "Fischer", "Sharma", "MacLeod",
]
ORGS = [
    "Acme Robotics Ltd", "Northwind Traders", "Bluepeak Energy", "Harbor Bank", "Kestrel Airlines",
    "Meridian Health Group", "Solace Foods", "Vantage Logistics", "Orion Analytics",
    "Greenfield Motors", "Copperleaf Media", "Tidewater Shipping", "Lumen Pharmaceuticals",
    "Falcon Ridge Capital", "Nordwind AG", "Brightline Software", "Silvergate Hotels",
    "Pinecrest University", "Atlas Insurance", "Redwood Telecom", "Quillon Books",
    "Stonebridge Partners", "Helix Biotech", "Marlowe & Finch", "Cobalt Mining Corp",
    "Sunward Solar", "Ironclad Security", "Bellweather Foods", "Aurora Textiles", "Granite Cloud",
    "Pelican Press", "Crescent Rail", "Evergreen Bank", "Zenith Toys", "Novara Cosmetics",
    "Riverstone Group", "Tallis Instruments", "Boreal Water", "Oakhurst Pharma", "Windmere Studios",
]
CITIES = [
    "New York", "Lisbon", "Zürich", "São Paulo", "Nairobi", "Oslo", "Kraków", "Reykjavík",
    "Buenos Aires", "Rio de Janeiro", "Cape Town", "Hong Kong", "Kuala Lumpur", "San Francisco",
    "Málaga", "Osaka", "Toronto", "Dublin", "Lagos", "Hamburg", "Seoul", "Melbourne", "Porto",
    "Marseille", "Accra", "Vancouver", "Lyon", "Istanbul", "Hanoi", "Montreal", "Edinburgh",
    "Bologna", "Chicago", "Auckland", "Casablanca", "Gdańsk", "Tallinn", "Bergen", "Córdoba",
    "Manila",
]
COUNTRIES = [
    "Portugal", "Kenya", "Norway", "Chile", "Japan", "Canada", "Vietnam", "Morocco", "Poland",
    "New Zealand", "South Africa", "Ireland", "Peru", "Indonesia", "Ghana", "Iceland", "Brazil",
    "Switzerland", "the Netherlands", "Costa Rica",
]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August",
          "September", "October", "November", "December"]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
                "ten", "eleven", "twelve"]


class Pools:
    """Filler pools for one split: train sees only the kept part, dev mixes in the held-out one."""

    def __init__(self, rng: random.Random, split: str, held: Dict[str, Tuple[list, list]]):
        self.rng = rng
        self.split = split
        self.held = held

    def pick(self, name: str):
        keep, out = self.held[name]
        if self.split == "dev" and out and self.rng.random() < DEV_NEW:
            return self.rng.choice(out)
        return self.rng.choice(keep)

    def pick_distinct(self, name: str, avoid: Sequence) -> object:
        for _ in range(100):
            value = self.pick(name)
            if value not in avoid:
                return value
        raise RuntimeError(f"cannot pick a distinct {name}")


def split_pools(seed: int, pools: Dict[str, list]) -> Dict[str, Tuple[list, list]]:
    """Splits each pool into (train-and-dev, dev-only) parts, deterministically."""
    rng = random.Random(f"{seed}-holdout")
    out = {}
    for name, values in pools.items():
        values = list(values)
        rng.shuffle(values)
        n_out = max(1, round(len(values) * HOLDOUT))
        out[name] = (values[n_out:], values[:n_out])
    return out


def cap(text: str) -> str:
    return text[:1].upper() + text[1:]


# ---------------------------------------------------------------------------------------------
# Task 1: sentiment
# ---------------------------------------------------------------------------------------------

# Subject groups: noun phrases (text, plural) with adjectives that fit them.
SENT_GROUPS = [
    {
        "domain": "product",
        "subjects": [("this blender", False), ("the vacuum cleaner", False), ("this laptop", False),
                     ("the kettle", False), ("this backpack", False), ("the headphones", True),
                     ("the running shoes", True), ("the desk lamp", False),
                     ("this coffee grinder", False), ("the e-reader", False),
                     ("the office chair", False), ("the phone case", False),
                     ("this rice cooker", False), ("the garden hose", False),
                     ("the wireless speaker", False), ("these kitchen knives", True)],
        "pos": ["sturdy", "reliable", "well made", "easy to use", "worth every penny",
                "excellent value", "solid", "a pleasure to use"],
        "neg": ["flimsy", "unreliable", "cheaply made", "awkward to use", "overpriced",
                "a waste of money", "fragile", "a pain to use"],
    },
    {
        "domain": "film",
        "subjects": [("the film", False), ("this movie", False), ("the sequel", False),
                     ("the documentary", False), ("the thriller", False), ("the comedy", False),
                     ("the animated feature", False), ("the remake", False),
                     ("the new series", False), ("the musical", False), ("the western", False),
                     ("the horror film", False)],
        "pos": ["gripping", "moving", "hilarious", "beautifully shot", "clever", "heartfelt",
                "captivating", "charming", "funny", "thrilling"],
        "neg": ["dull", "predictable", "boring", "confusing", "painfully slow", "forgettable",
                "overlong", "clumsy", "tedious", "lifeless"],
    },
    {
        "domain": "restaurant",
        "subjects": [("the food", False), ("the pasta", False), ("the curry", False),
                     ("the soup", False), ("the burger", False), ("the dessert", False),
                     ("the seafood platter", False), ("the pizza", False), ("the ramen", False),
                     ("the tacos", True), ("the dumplings", True), ("the roast chicken", False),
                     ("the brunch menu", False), ("the salad", False)],
        "pos": ["delicious", "fresh", "flavourful", "perfectly cooked", "tasty", "generous",
                "mouth-watering", "superb"],
        "neg": ["bland", "cold", "greasy", "overcooked", "stale", "tasteless", "soggy",
                "undercooked"],
    },
    {
        "domain": "service",
        "subjects": [("the delivery", False), ("the booking process", False),
                     ("the refund process", False), ("the check-in", False),
                     ("the installation", False), ("the repair", False),
                     ("the online ordering", False), ("the return process", False)],
        "pos": ["fast", "smooth", "efficient", "painless", "quick", "straightforward", "seamless"],
        "neg": ["slow", "confusing", "chaotic", "painful", "endless", "frustrating", "messy"],
    },
    {
        "domain": "service",
        "person": True,  # refer back with "they"
        "subjects": [("the staff", True), ("the customer support team", False),
                     ("the plumber", False), ("the sales assistant", False), ("the courier", False),
                     ("the technician", False), ("the helpline staff", True), ("the driver", False),
                     ("the support agent", False), ("the cleaners", True),
                     ("the removal team", False), ("the installer", False)],
        "pos": ["friendly", "helpful", "professional", "polite", "attentive", "kind",
                "patient", "welcoming"],
        "neg": ["rude", "unhelpful", "careless", "unprofessional", "dismissive", "impatient",
                "sloppy", "disorganised"],
    },
]

SENT_ASPECTS = {
    "product": [("the battery", False), ("the build quality", False), ("the screen", False),
                ("the instructions", True), ("the price", False), ("the design", False),
                ("the packaging", False), ("the sound", False), ("the handle", False),
                ("the colour", False)],
    "film": [("the acting", False), ("the script", False), ("the soundtrack", False),
             ("the ending", False), ("the pacing", False), ("the dialogue", False),
             ("the lead actor", False), ("the special effects", True), ("the cast", False),
             ("the opening scene", False)],
    "restaurant": [("the service", False), ("the staff", True), ("the atmosphere", False),
                   ("the wine list", False), ("the portions", True), ("the music", False),
                   ("the decor", False), ("the location", False), ("the bread", False),
                   ("the coffee", False)],
    "service": [("the website", False), ("the app", False), ("the price", False),
                ("the waiting time", False), ("the tracking page", False), ("the paperwork", False),
                ("the phone line", False), ("the email updates", True), ("the office", False)],
}
GEN_POS = ["great", "excellent", "wonderful", "superb", "impressive", "fantastic", "lovely",
           "outstanding", "brilliant", "good"]
GEN_NEG = ["terrible", "awful", "disappointing", "poor", "dreadful", "mediocre", "frustrating",
           "bad", "weak", "horrible"]
MILD_NEG = ["disappointing", "weak", "underwhelming", "uneven", "lacking", "forgettable"]
MILD_POS = ["decent", "fine", "nice", "pleasant", "acceptable", "passable", "reasonable"]
EXTREME = {"excellent", "wonderful", "superb", "fantastic", "outstanding", "brilliant",
           "terrible", "awful", "dreadful", "horrible", "delicious", "hilarious", "perfect",
           "mouth-watering", "seamless", "painless", "endless", "tasteless", "lifeless"}
INT_GRADABLE = ["very", "really", "quite", "incredibly", "remarkably", "pretty", "so",
                "genuinely", "surprisingly"]
INT_EXTREME = ["absolutely", "truly", "simply", "just"]

DOMAIN_NOUN = {
    "product": [("purchase", "made"), ("gadget", "bought"), ("thing", "bought")],
    "film": [("film", "seen"), ("movie", "watched"), ("story", "seen on screen")],
    "restaurant": [("meal", "had"), ("dinner", "eaten"), ("lunch", "had")],
    "service": [("service", "received"), ("experience", "had"), ("customer service", "dealt with")],
}
OPENERS = {
    "product": ["Bought this last month.", "Ordered it as a gift.", "Used it every day for two weeks.",
                "It arrived on Tuesday.", "I replaced my old one with this.", "Second one I have owned."],
    "film": ["Saw it on Friday night.", "Watched it with my family.", "We went to the late screening.",
             "Finally caught it at the cinema.", "Streamed it last weekend."],
    "restaurant": ["We went there for my birthday.", "Booked a table for four.",
                   "Stopped by for a quick lunch.", "Tried it after a friend suggested it.",
                   "We came on a busy Saturday."],
    "service": ["I had to contact them twice.", "Ordered on a Monday.", "First time trying them.",
                "We called them on a Friday.", "Booked online last week."],
}
CLOSERS = {
    "positive": {
        "product": ["Would buy again.", "Highly recommended.", "Very happy with it.", "Worth it."],
        "film": ["Would watch again.", "Go and see it.", "Highly recommended.", "A real treat."],
        "restaurant": ["We will definitely be back.", "Highly recommended.", "Book a table.",
                       "Can't wait to return."],
        "service": ["Will use them again.", "Highly recommended.", "Five stars from me.",
                    "Thank you!"],
    },
    "negative": {
        "product": ["Sent it back.", "Save your money.", "Avoid.", "Would not buy again."],
        "film": ["Skip it.", "Two hours I will never get back.", "Avoid.", "What a letdown."],
        "restaurant": ["Never again.", "Avoid.", "We will not be back.", "Such a shame."],
        "service": ["Never again.", "Avoid them.", "One star is generous.", "Still waiting for a reply."],
    },
}
POS_VERBS = ["loved", "really enjoyed", "{be} impressed by", "{be} delighted with", "adored",
             "{be} pleasantly surprised by"]
NEG_VERBS = ["hated", "{be} disappointed by", "regretted choosing", "{be} let down by",
             "could not stand", "{be} annoyed by"]


def _be(plural: bool, past: bool) -> str:
    if past:
        return "were" if plural else "was"
    return "are" if plural else "is"




def _intens(rng: random.Random, adj: str, p: float = 0.5) -> str:
    if " " in adj or rng.random() > p:
        return adj
    return f"{rng.choice(INT_EXTREME if adj in EXTREME else INT_GRADABLE)} {adj}"


def _sentiment_sentence(rng: random.Random, pools: Pools, label: str) -> str:
    group = rng.choice(SENT_GROUPS)
    domain = group["domain"]
    subj, pl = pools.pick(f"subj:{domain}:{SENT_GROUPS.index(group)}")
    aspect, apl = rng.choice(SENT_ASPECTS[domain])
    past = rng.random() < 0.55
    be, abe = _be(pl, past), _be(apl, past)
    # "it is" / "they are" (people are "they", even one person)
    they = "they " + _be(True, past) if pl or group.get("person") else "it " + be
    good = label == "positive"
    same = group["pos"] if good else group["neg"]
    opp = group["neg"] if good else group["pos"]
    gsame = GEN_POS if good else GEN_NEG
    gopp = GEN_NEG if good else GEN_POS
    adj = rng.choice(same)
    single_same = [a for a in same if " " not in a]
    kind = rng.choices(
        ["simple", "two_adj", "opener", "closer", "verb", "best", "expect", "negated",
         "nothing", "recommend", "but_later", "but_minor", "although"],
        weights=[10, 6, 7, 7, 6, 4, 5, 11, 4, 6, 10, 8, 8],
    )[0]

    if kind == "simple":
        lead = rng.choice(["", "", "Honestly, ", "Overall, ", "In short, ", "I have to say ",
                           "To be fair, ", "All in all, "])
        s = f"{lead}{subj} {be} {_intens(rng, adj)}."
    elif kind == "two_adj":
        adj2 = rng.choice([a for a in same + gsame if a != adj])
        s = f"{subj} {be} {_intens(rng, adj, 0.3)} and {_intens(rng, adj2, 0.3)}."
    elif kind == "opener":
        s = f"{rng.choice(OPENERS[domain])} {cap(subj)} {be} {_intens(rng, adj)}."
    elif kind == "closer":
        s = f"{subj} {be} {_intens(rng, adj)}. {rng.choice(CLOSERS[label][domain])}"
    elif kind == "verb":
        who = rng.choice(["I", "We", "My partner and I"])
        verb = rng.choice(POS_VERBS if good else NEG_VERBS).format(be="was" if who == "I" else "were")
        s = f"{who} {verb} {subj}."
    elif kind == "best":
        noun, verb = rng.choice(DOMAIN_NOUN[domain])
        when = rng.choice(["in years", "in a long time", "this year", "in months", "in a decade"])
        which = "best" if good else "worst"
        s = f"{subj} {be} the {which} {noun} I have {verb} {when}."
    elif kind == "expect":
        if good:
            s = rng.choice([
                f"{subj} {be} far better than I expected.",
                f"{subj} {be} not as bad as the reviews said; in fact {they} {adj}.",
                f"I did not expect much, but {subj} {be} {_intens(rng, adj)}.",
                f"I was not sure at first, but {subj} {be} {_intens(rng, adj)}.",
            ])
        else:
            s = rng.choice([
                f"{subj} {be} much worse than I expected.",
                f"{subj} {be} not as good as the reviews said; {they} {adj}.",
                f"I had high hopes, but {subj} {be} {_intens(rng, adj)}.",
                f"I really wanted to like {subj}, but {they} {adj}.",
            ])
    elif kind == "negated":
        # negated opposite: "not bad at all" -> positive, "not good" -> negative
        neg_adj = rng.choice([a for a in opp if " " not in a] + (["bad"] if good else ["good"]))
        if good:
            s = rng.choice([
                f"{subj} {be} not {neg_adj} at all.",
                f"{subj} {be} never {neg_adj}, not even once.",
                f"{subj} {be} far from {neg_adj}.",
                f"Contrary to what I had heard, {subj} {be} not {neg_adj}; {they} {rng.choice(single_same)}.",
                f"I could not have been happier with {subj}.",
                f"I can't complain about {subj}; {they} {adj}.",
            ])
        else:
            mod = rng.choice(["", "", "very ", "particularly ", "remotely ", "at all "])
            s = rng.choice([
                f"{subj} {be} not {mod}{neg_adj}.",
                f"Sadly, {subj} {be} not {neg_adj} at all.",
                f"{subj} {be} never {neg_adj}, not even once.",
                f"{subj} {be} far from {neg_adj}.",
                f"I can't say {subj} {be} {neg_adj}; {they} {rng.choice(single_same)}.",
                f"I was not happy with {subj} at all.",
            ])
    elif kind == "nothing":
        # "nothing bad about" -> positive, "nothing good about" -> negative
        other = rng.choice([a for a in opp + gopp if " " not in a])
        if rng.random() < 0.5:
            s = f"There {'was' if past else 'is'} nothing {other} about {subj}."
        else:
            s = f"I found nothing {other} about {subj}; {they} {adj}."
    elif kind == "recommend":
        if good:
            s = rng.choice([
                f"I would recommend {subj} without hesitation.",
                f"I could not recommend {subj} more highly.",
                f"I would happily recommend {subj} to anyone.",
                f"I would not hesitate to recommend {subj}.",
            ])
        else:
            s = rng.choice([
                f"I would not recommend {subj} to anyone.",
                f"I cannot recommend {subj}.",
                f"I would think twice before recommending {subj}.",
                f"I would recommend avoiding {subj}.",
            ])
    elif kind == "but_later":
        # "<other polarity> aspect, but overall <label> subject" -> label follows the main clause
        o = rng.choice(gopp)
        link = rng.choice([", but overall ", ", but in the end ", ", but ", "; however, "])
        s = f"{aspect} {abe} {_intens(rng, o, 0.3)}{link}{subj} {be} {_intens(rng, adj)}."
    elif kind == "but_minor":
        # "<label> subject, but a minor caveat" -> label follows the first (main) clause
        if good:
            s = f"{subj} {be} {_intens(rng, adj)}, but {aspect} {abe} a bit {rng.choice(MILD_NEG)}."
        else:
            s = f"{subj} {be} {_intens(rng, adj)}, though at least {aspect} {abe} {rng.choice(MILD_POS)}."
    else:  # although / while / even though / despite
        o = rng.choice(gopp)
        s = rng.choice([
            f"Although {aspect} {abe} {o}, {subj} {be} {_intens(rng, adj)}.",
            f"While {aspect} {abe} {o}, {subj} {be} {_intens(rng, adj)}.",
            f"{subj} {be} {_intens(rng, adj)}, even though {aspect} {abe} {o}.",
            f"Despite {aspect} being {o}, {subj} {be} {adj} overall.",
        ])
    return cap(s)


def make_sentiment(seed: int, held: Dict[str, Tuple[list, list]]) -> Dict[str, List[Tuple[str, ...]]]:
    out: Dict[str, List[Tuple[str, ...]]] = {}
    seen: Set[str] = set()
    for split in ("train", "dev"):
        rng = random.Random(f"{seed}-sentiment-{split}")
        pools = Pools(rng, split, held)
        rows = []
        for label in ("negative", "positive"):
            n = 0
            while n < SIZES[split] // 2:
                s = _sentiment_sentence(rng, pools, label)
                key = s.lower()
                if key in seen:
                    continue
                seen.add(key)
                rows.append((s, label))
                n += 1
        rng.shuffle(rows)
        out[split] = rows
    return out


# ---------------------------------------------------------------------------------------------
# Task 2: paraphrase
# ---------------------------------------------------------------------------------------------

def _num(rng: random.Random, n: int) -> str:
    """A small number as a word or digits."""
    if n < len(NUMBER_WORDS) and rng.random() < 0.5:
        return NUMBER_WORDS[n]
    return str(n)


def _time(rng: random.Random, t: Tuple[int, int]) -> str:
    h, m = t
    forms = [f"{h}:{m:02d}"]
    nxt = NUMBER_WORDS[h % 12 + 1]
    if m == 0:
        forms.append(f"{NUMBER_WORDS[h]} o'clock")
    elif m == 30:
        forms.append(f"half past {NUMBER_WORDS[h]}")
    elif m == 15:
        forms.append(f"quarter past {NUMBER_WORDS[h]}")
    elif m == 45:
        forms.append(f"quarter to {nxt}")
    return rng.choice(forms)


def _team(rng: random.Random, pools: Pools) -> str:
    return f"{pools.pick('city')} {rng.choice(['United', 'Rovers', 'Athletic', 'City', 'Wanderers'])}"


# Slot types: how to sample a value, and how to render it (each sentence renders afresh).
SLOT_SAMPLERS: Dict[str, Callable[[random.Random, Pools], object]] = {
    "ORG": lambda r, p: p.pick("org"),
    "PER": lambda r, p: f"{p.pick('first')} {p.pick('last')}",
    "CITY": lambda r, p: p.pick("city"),
    "TEAM": _team,
    "YEAR": lambda r, p: r.randint(1995, 2023),
    "MONTH": lambda r, p: r.choice(MONTHS),
    "DAY": lambda r, p: r.choice(DAYS),
    "PCT": lambda r, p: r.choice([2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 14, 15, 18, 20, 22, 25, 30]),
    "MILLION": lambda r, p: r.choice([12, 15, 20, 35, 40, 45, 60, 75, 80, 120, 150, 240, 300, 450]),
    "JOBS": lambda r, p: r.choice([40, 60, 80, 120, 150, 200, 250, 300, 400, 500, 650]),
    "HOURS": lambda r, p: r.randint(2, 7),
    "YEARS": lambda r, p: r.randint(2, 11),
    "GOALS": lambda r, p: r.randint(0, 5),
    "TIME": lambda r, p: (r.randint(6, 11), r.choice([0, 5, 10, 15, 20, 30, 40, 45, 50])),
    "PLATFORM": lambda r, p: r.randint(1, 12),
    "PRICE": lambda r, p: r.choice([19, 25, 30, 45, 49, 60, 75, 80, 99, 120, 150, 199, 250]),
    "PRODUCT": lambda r, p: p.pick("product"),
    "BRAND": lambda r, p: p.pick("brand"),
    "PUBLISHER": lambda r, p: p.pick("publisher"),
    "QUARTER": lambda r, p: r.choice(["first", "second", "third", "fourth"]),
    "ROLE": lambda r, p: r.choice(["chief executive", "chief financial officer", "chair",
                                   "head of research", "chief operating officer"]),
    "ORDINAL": lambda r, p: r.choice(["first", "second", "third"]),
}
PUBLISHERS = ["Quillon Books", "Pelican Press", "Harrow House", "Lantern Editions",
              "Bramble & Co", "Northlight Books", "Saltmarsh Press", "Inkwell Publishing",
              "Greystone Editions", "Paper Kite Press"]
BRANDS = ["Voltaro", "Kitewell", "Nimbus Home", "Brisa", "Ferrow", "Lumo", "Quenta", "Halden",
          "Orbix", "Tandem Labs", "Zenith Toys", "Tallis Instruments", "Acme Robotics Ltd",
          "Marlowe & Finch", "Pebblebrook"]
PRODUCTS = ["electric scooter", "smartwatch", "espresso machine", "robot vacuum", "tablet",
            "air fryer", "e-bike", "drone", "gaming console", "noise-cancelling headset",
            "standing desk", "camera", "sewing machine", "projector", "fitness tracker"]

# Each family: slot types, optional key slot (category choosing the wording set), wordings,
# and perturbations that change the claim: ("change", slot) or ("swap", a, b) or ("flip", slot).
FAMILIES = [
    {
        "name": "acquisition",
        "slots": {"A": "ORG", "B": "ORG", "N": "MILLION"},
        "texts": [
            "{A} acquired {B} for {N} million dollars.",
            "{B} was acquired by {A} for ${N} million.",
            "{A} bought {B} in a deal worth {N} million dollars.",
            "In a ${N} million deal, {A} took over {B}.",
            "{B} was sold to {A} for {N} million dollars.",
            "{A} paid ${N} million to buy {B}.",
        ],
        "perturb": [("swap", "A", "B"), ("change", "N"), ("change", "B"), ("change", "A")],
    },
    {
        "name": "profit",
        "slots": {"ORG": "ORG", "P": "PCT", "Q": "QUARTER"},
        "key": ("dir", ["up", "down"]),
        "texts": {
            "up": [
                "{ORG} reported a {P} percent rise in {Q}-quarter profit.",
                "{ORG}'s profit rose by {P} percent in the {Q} quarter.",
                "In the {Q} quarter, profit at {ORG} grew {P} percent.",
                "{ORG} said its {Q}-quarter profit was up {P} percent.",
                "Profit at {ORG} increased {P} percent in the {Q} quarter.",
            ],
            "down": [
                "{ORG} reported a {P} percent drop in {Q}-quarter profit.",
                "{ORG}'s profit fell by {P} percent in the {Q} quarter.",
                "In the {Q} quarter, profit at {ORG} declined {P} percent.",
                "{ORG} said its {Q}-quarter profit was down {P} percent.",
                "Profit at {ORG} decreased {P} percent in the {Q} quarter.",
            ],
        },
        "perturb": [("flip", "dir"), ("change", "P"), ("change", "Q"), ("change", "ORG")],
    },
    {
        "name": "appointment",
        "slots": {"PER": "PER", "ORG": "ORG", "ROLE": "ROLE"},
        "key": ("act", ["joined", "left"]),
        "texts": {
            "joined": [
                "{ORG} appointed {PER} as its new {ROLE}.",
                "{PER} was named {ROLE} of {ORG}.",
                "{PER} has become the new {ROLE} at {ORG}.",
                "{ORG} has named {PER} its {ROLE}.",
                "{ORG} announced that {PER} will take over as {ROLE}.",
            ],
            "left": [
                "{PER} resigned as {ROLE} of {ORG}.",
                "{PER} has stepped down as {ORG}'s {ROLE}.",
                "{ORG} said {PER} had quit as {ROLE}.",
                "{PER} is leaving the post of {ROLE} at {ORG}.",
                "{ORG} announced the resignation of its {ROLE}, {PER}.",
            ],
        },
        "perturb": [("flip", "act"), ("change", "ROLE"), ("change", "PER"), ("change", "ORG")],
    },
    {
        "name": "relocation",
        "slots": {"PER": "PER", "C1": "CITY", "C2": "CITY", "Y": "YEAR"},
        "texts": [
            "{PER} moved from {C1} to {C2} in {Y}.",
            "In {Y}, {PER} left {C1} and settled in {C2}.",
            "{PER} relocated to {C2} from {C1} in {Y}.",
            "{PER} left {C1} for {C2} in {Y}.",
            "It was in {Y} that {PER} moved to {C2} after living in {C1}.",
        ],
        "perturb": [("swap", "C1", "C2"), ("change", "Y"), ("change", "C2"), ("change", "PER")],
    },
    {
        "name": "age",
        "slots": {"P1": "PER", "P2": "PER", "N": "YEARS"},
        "texts": [
            "{P1} is {N} years older than {P2}.",
            "{P2} is {N} years younger than {P1}.",
            "{P1} was born {N} years before {P2}.",
            "{P2} was born {N} years after {P1}.",
            "There are {N} years between {P1} and {P2}, and {P1} is the elder.",
        ],
        "perturb": [("swap", "P1", "P2"), ("change", "N"), ("change", "P2")],
    },
    {
        "name": "train",
        "slots": {"C": "CITY", "T": "TIME", "PL": "PLATFORM"},
        "texts": [
            "The train to {C} leaves at {T} from platform {PL}.",
            "The {C} train departs from platform {PL} at {T}.",
            "At {T}, the train for {C} will leave from platform {PL}.",
            "Trains to {C} depart from platform {PL}; the next one is at {T}.",
            "The next train to {C} departs at {T} from platform {PL}.",
        ],
        "perturb": [("change", "T"), ("change", "PL"), ("change", "C")],
    },
    {
        "name": "office",
        "slots": {"ORG": "ORG", "C": "CITY", "M": "MONTH", "N": "JOBS"},
        "key": ("act", ["open", "close"]),
        "texts": {
            "open": [
                "{ORG} will open an office in {C} in {M}, creating {N} jobs.",
                "In {M}, {ORG} plans to open a {C} office that will employ {N} people.",
                "{ORG}'s new office in {C}, due to open in {M}, will create {N} jobs.",
                "A new {ORG} office with {N} staff is set to open in {C} in {M}.",
            ],
            "close": [
                "{ORG} will close its office in {C} in {M}, cutting {N} jobs.",
                "In {M}, {ORG} plans to shut its {C} office, which employs {N} people.",
                "{ORG}'s office in {C} will close in {M}, with the loss of {N} jobs.",
                "{N} jobs will be lost when {ORG} closes its office in {C} in {M}.",
            ],
        },
        "perturb": [("flip", "act"), ("change", "C"), ("change", "M"), ("change", "N")],
    },
    {
        "name": "meeting",
        "slots": {"P1": "PER", "P2": "PER", "C": "CITY", "D": "DAY"},
        "texts": [
            "{P1} met {P2} in {C} on {D}.",
            "On {D}, {P1} and {P2} held talks in {C}.",
            "{P2} and {P1} met on {D} in {C}.",
            "{P1} had a meeting with {P2} in {C} on {D}.",
            "{P1} and {P2} got together in {C} on {D}.",
        ],
        "perturb": [("change", "D"), ("change", "C"), ("change", "P2")],
    },
    {
        "name": "price",
        "slots": {"PROD": "PRODUCT", "N": "PRICE", "ORG": "BRAND"},
        "texts": [
            "The {PROD} from {ORG} costs {N} dollars.",
            "{ORG} sells its {PROD} for ${N}.",
            "The price of the {ORG} {PROD} is {N} dollars.",
            "You can buy the {PROD} made by {ORG} for ${N}.",
            "{ORG}'s {PROD} is priced at {N} dollars.",
        ],
        "perturb": [("change", "N"), ("change", "PROD"), ("change", "ORG")],
    },
    {
        "name": "flight",
        "slots": {"C1": "CITY", "C2": "CITY", "H": "HOURS", "D": "DAY"},
        "texts": [
            "The flight from {C1} to {C2} was delayed by {H} hours on {D}.",
            "On {D}, passengers flying from {C1} to {C2} faced a {H}-hour delay.",
            "The {C1} to {C2} flight left {H} hours late on {D}.",
            "A {H}-hour delay hit the {D} flight from {C1} to {C2}.",
            "On {D}, the flight to {C2} from {C1} departed {H} hours behind schedule.",
        ],
        "perturb": [("swap", "C1", "C2"), ("change", "H"), ("change", "D"), ("change", "C2")],
    },
    {
        "name": "novel",
        "slots": {"PER": "PER", "ORG": "PUBLISHER", "Y": "YEAR", "ORD": "ORDINAL"},
        "texts": [
            "{PER}'s {ORD} novel was published by {ORG} in {Y}.",
            "{ORG} published the {ORD} novel by {PER} in {Y}.",
            "In {Y}, {ORG} released {PER}'s {ORD} novel.",
            "The {ORD} novel written by {PER} came out with {ORG} in {Y}.",
        ],
        "perturb": [("change", "Y"), ("change", "ORG"), ("change", "ORD"), ("change", "PER")],
    },
    {
        "name": "match",
        "slots": {"A": "TEAM", "B": "TEAM", "X": "GOALS", "Y": "GOALS", "D": "DAY"},
        "texts": [
            "{A} beat {B} {X}-{Y} on {D}.",
            "{B} lost {X}-{Y} to {A} on {D}.",
            "On {D}, {A} defeated {B} by {X} goals to {Y}.",
            "{A} won {X}-{Y} against {B} on {D}.",
            "{B} were beaten {X}-{Y} by {A} on {D}.",
        ],
        "perturb": [("swap", "A", "B"), ("change", "X"), ("change", "D"), ("change", "B")],
    },
    {
        "name": "population",
        "slots": {"C1": "CITY", "C2": "CITY"},
        "texts": [
            "{C1} has a larger population than {C2}.",
            "{C2} has fewer inhabitants than {C1}.",
            "More people live in {C1} than in {C2}.",
            "Fewer people live in {C2} than in {C1}.",
            "{C2} is smaller than {C1} in terms of population.",
        ],
        "perturb": [("swap", "C1", "C2"), ("change", "C2")],
    },
]
ENTITY_TYPES = {"ORG", "PER", "CITY", "BRAND", "PUBLISHER"}


def _check_family_slots(fam: dict, slots: dict) -> bool:
    """Slot values that must differ (e.g. acquirer and target) do; match scores are a win."""
    types = fam["slots"]
    vals = [slots[k] for k, t in types.items() if t in ENTITY_TYPES | {"TEAM"}]
    if len(set(vals)) != len(vals):
        return False
    if fam["name"] == "match" and not slots["X"] > slots["Y"]:
        return False
    return True


def _sample_slots(fam: dict, rng: random.Random, pools: Pools, fixed: dict = None) -> dict:
    for _ in range(200):
        slots = {k: SLOT_SAMPLERS[t](rng, pools) for k, t in fam["slots"].items()}
        if "key" in fam:
            slots[fam["key"][0]] = rng.choice(fam["key"][1])
        if fixed:
            slots.update(fixed)
        if _check_family_slots(fam, slots):
            return slots
    raise RuntimeError(f"cannot fill {fam['name']}")


def _wordings(fam: dict, slots: dict) -> List[str]:
    texts = fam["texts"]
    return texts[slots[fam["key"][0]]] if "key" in fam else texts


def _render(fam: dict, slots: dict, index: int, rng: random.Random) -> str:
    values = {}
    for k, v in slots.items():
        t = fam["slots"].get(k)
        if t in ("HOURS", "YEARS"):
            v = _num(rng, v)
        elif t == "TIME":
            v = _time(rng, v)
        values[k] = v
    text = _wordings(fam, slots)[index].format(**values)
    text = text.replace("s's ", "s' ")  # "Vantage Logistics' office"
    text = re.sub(r"\b([Aa]) (?=(?:8\d*|11|18|eight|eleven|eighteen)\b)", r"\1n ", text)  # an 11
    return cap(text)


def _perturb(fam: dict, slots: dict, rng: random.Random, pools: Pools) -> dict:
    for _ in range(200):
        op = rng.choice(fam["perturb"])
        new = dict(slots)
        if op[0] == "swap":
            new[op[1]], new[op[2]] = slots[op[2]], slots[op[1]]
        elif op[0] == "flip":
            name, options = fam["key"]
            new[name] = rng.choice([o for o in options if o != slots[name]])
        else:
            t = fam["slots"][op[1]]
            new[op[1]] = SLOT_SAMPLERS[t](rng, pools)
        if new == slots or not _check_family_slots(fam, new):
            if fam["name"] == "match" and op[0] == "swap":
                return new  # a reversed result is the point of this perturbation
            continue
        return new
    raise RuntimeError(f"cannot perturb {fam['name']}")


def _related(fam: dict, slots: dict, rng: random.Random, pools: Pools):
    """A fact from another family that shares at least one entity with ``slots``."""
    ents = [(t, slots[k]) for k, t in fam["slots"].items() if t in ENTITY_TYPES]
    if not ents:
        return None
    for _ in range(200):
        other = rng.choice([f for f in FAMILIES if f is not fam])
        t, value = rng.choice(ents)
        keys = [k for k, kt in other["slots"].items() if kt == t]
        if not keys:
            continue
        try:
            new = _sample_slots(other, rng, pools, {rng.choice(keys): value})
        except RuntimeError:
            continue
        return other, new
    return None  # no other kind of fact mentions this kind of entity


def _paraphrase_pair(rng: random.Random, pools: Pools, label: str) -> Tuple[str, str]:
    fam = rng.choice(FAMILIES)
    slots = _sample_slots(fam, rng, pools)
    n = len(_wordings(fam, slots))
    i = rng.randrange(n)
    s1 = _render(fam, slots, i, rng)
    if label == "paraphrase":
        j = rng.choice([x for x in range(n) if x != i])
        s2 = _render(fam, slots, j, rng)
    else:
        # mostly hard negatives (same kind of fact, one detail changed), sometimes a
        # different fact about the same person, company or place
        related = _related(fam, slots, rng, pools) if rng.random() < 0.3 else None
        other, new = related or (fam, _perturb(fam, slots, rng, pools))
        s2 = _render(other, new, rng.randrange(len(_wordings(other, new))), rng)
    if rng.random() < 0.5:
        s1, s2 = s2, s1
    return s1, s2


def make_paraphrase(seed: int, held: Dict[str, Tuple[list, list]]) -> Dict[str, List[Tuple[str, ...]]]:
    out: Dict[str, List[Tuple[str, ...]]] = {}
    train_sentences: Set[str] = set()
    for split in ("train", "dev"):
        rng = random.Random(f"{seed}-paraphrase-{split}")
        pools = Pools(rng, split, held)
        rows, seen = [], set()
        for label in ("different", "paraphrase"):
            n = 0
            while n < SIZES[split] // 2:
                s1, s2 = _paraphrase_pair(rng, pools, label)
                if s1 == s2:
                    continue
                key = tuple(sorted((s1, s2)))
                if key in seen or s1 in train_sentences or s2 in train_sentences:
                    continue
                seen.add(key)
                rows.append((s1, s2, label))
                n += 1
        rng.shuffle(rows)
        if split == "train":
            train_sentences = {s for r in rows for s in r[:2]}
        out[split] = rows
    return out


# ---------------------------------------------------------------------------------------------
# Task 3: entities (CoNLL BIO tagging)
# ---------------------------------------------------------------------------------------------

# Tokens separated by spaces; {PER} {PER2} {PER3} {TPER} (title + surname) {ORG} {ORG2}
# {LOC} {LOC2} (city or country) {CITY} {CITY2} are entities; {DAY} {MONTH} {YEAR} {NUM} {SMALL} {PCT} are plain tokens.
NER_TEMPLATES = [
    "{PER} , chief executive of {ORG} , said the company would expand into {LOC} next year .",
    "{ORG} has opened a new research centre in {CITY} .",
    "Shares in {ORG} rose {PCT} percent on {DAY} after the company reported strong sales .",
    "{PER} flew from {LOC} to {LOC2} on {DAY} to meet investors .",
    "The conference will take place in {LOC} in {MONTH} .",
    "{TPER} told reporters in {LOC} that talks with {ORG} were going well .",
    "{ORG} and {ORG2} announced a joint venture on {DAY} .",
    "According to {PER} , the new route between {LOC} and {LOC2} will launch in {MONTH} .",
    "{PER} joined {ORG} in {YEAR} as head of marketing .",
    "Visitors to {CITY} can take a ferry to {CITY2} every morning .",
    "{ORG} 's new headquarters in {CITY} will house {NUM} employees .",
    "We spent three days in {LOC} before taking the train to {LOC2} .",
    "{PER} and {PER2} founded {ORG} in a garage in {CITY} .",
    "The mayor of {CITY} , {PER} , opened the festival on {DAY} .",
    "{ORG} has hired {PER} from rival {ORG2} .",
    "Analysts at {ORG} expect house prices in {LOC} to fall this year .",
    "{TPER} , a spokesperson for {ORG} , declined to comment .",
    "The best time to visit {LOC} is early {MONTH} , when the crowds are smaller .",
    "{PER} won the marathon in {CITY} on {DAY} .",
    "{ORG} said on {DAY} it would cut {NUM} jobs at its plant near {CITY} .",
    "In {YEAR} , {PER} moved to {LOC} to work for {ORG} .",
    "The hotel is a short walk from the old town of {CITY} .",
    "Flights from {CITY} to {LOC} were cancelled because of the storm .",
    "{PER} thanked the staff of {ORG} for their support .",
    "{ORG} is based in {CITY} but has offices in {LOC} .",
    "Thanks to {PER} , the project was finished ahead of schedule .",
    "{PER} will replace {PER2} as head of {ORG} in {MONTH} .",
    "Our guide , {PER} , showed us the markets of {CITY} .",
    "{ORG} signed a supply deal with {ORG2} worth {NUM} million dollars .",
    "Heavy rain caused flooding across {LOC} on {DAY} .",
    "{TPER} , who studied in {LOC} , now teaches at {ORG} .",
    "Tickets for the concert in {CITY} sold out within hours , {ORG} said .",
    "We are very proud of the team , said {PER} , who has led {ORG} since {YEAR} .",
    "{ORG} recalled {NUM} cars sold in {LOC} last month .",
    "{PER} ( {ORG} ) was elected chair of the board on {DAY} .",
    "The road from {LOC} to {LOC2} is closed for repairs until {MONTH} .",
    "Ask {PER} at the front desk for a map of {CITY} .",
    "{ORG} opened its first store outside {LOC} in {YEAR} .",
    "Police in {LOC} said {NUM} people were injured in the crash .",
    "{PER} , {PER2} and {PER3} will represent {ORG} at the summit in {LOC} .",
    "The museum in {CITY} reopened on {DAY} after two years of renovation .",
    "{PER} said {ORG} would not raise prices this year .",
    "From {LOC} , it takes about {SMALL} hours by bus to reach {LOC2} .",
    "{ORG} lost its case against {ORG2} at a court in {LOC} .",
    "{TPER} arrived in {LOC} on {DAY} for a three-day visit .",
    "Investors in {LOC} welcomed the merger of {ORG} and {ORG2} .",
    "{PER} , who grew up in {LOC} , has written a book about {LOC2} .",
    "Last {MONTH} {ORG} moved its main office from {CITY} to {CITY2} .",
    "I met {PER} at a café in {CITY} .",
    "{ORG} expects sales in {LOC} to grow by {PCT} percent .",
    "The exhibition , sponsored by {ORG} , runs in {CITY} until {MONTH} .",
    "{TPER} and {TPER2} disagreed about the plan .",
    "After leaving {ORG} , {PER} started a bakery in {LOC} .",
    "Hikers should check the weather before leaving {LOC} .",
    "A spokesman for {ORG} confirmed that {PER} had resigned .",
]
NER_EMPTY = [
    "The meeting has been moved to {DAY} afternoon .",
    "Shares fell sharply on {DAY} after the quarterly report .",
    "Prices rose by {PCT} percent in {MONTH} , the highest rate this year .",
    "The company plans to hire {NUM} new engineers next year .",
    "Breakfast is served from seven until ten every morning .",
    "The board will vote on the proposal in {MONTH} .",
    "Most visitors arrive by train , but the bus is cheaper .",
    "Sales of electric bikes doubled in {YEAR} .",
    "The new bridge will open to traffic in {MONTH} .",
    "Our flight was delayed by {SMALL} hours , so we missed the connection .",
    "The Chief Financial Officer resigned on {DAY} .",
    "Unemployment fell for the third month in a row .",
    "Rooms with a sea view cost a little more .",
    "The talks will resume on {DAY} , officials said .",
]
TITLES = ["Mr.", "Ms.", "Dr.", "Professor", "Mrs."]
CITY_ORG_FORMS = ["University of {}", "{} City Council", "Bank of {}", "{} Chamber of Commerce",
                  "{} Transport Authority"]


def _ner_entity(kind: str, rng: random.Random, pools: Pools) -> Tuple[List[str], List[str]]:
    """Returns (tokens, tags) for one entity slot."""
    if kind == "PER":
        r = rng.random()
        if r < 0.84:
            text, etype = f"{pools.pick('first')} {pools.pick('last')}", "PER"
        elif r < 0.94:
            text, etype = pools.pick("first"), "PER"
        else:
            text, etype = pools.pick("last"), "PER"
    elif kind == "TPER":
        toks, tags = _ner_entity_text(pools.pick("last"), "PER")
        return [rng.choice(TITLES)] + toks, ["O"] + tags
    elif kind == "ORG":
        if rng.random() < 0.15:  # organisations named after a place
            text = rng.choice(CITY_ORG_FORMS).format(pools.pick("city"))
        else:
            text = pools.pick("org")
        etype = "ORG"
    else:  # LOC: a city or a country; CITY: a city
        text = pools.pick("country") if kind == "LOC" and rng.random() < 0.3 else pools.pick("city")
        etype = "LOC"
        if text.startswith("the "):  # "the Netherlands": the article is not part of the entity
            toks, tags = _ner_entity_text(text[4:], etype)
            return ["the"] + toks, ["O"] + tags
    return _ner_entity_text(text, etype)


def _ner_entity_text(text: str, etype: str) -> Tuple[List[str], List[str]]:
    toks = text.split()
    return toks, [f"B-{etype}"] + [f"I-{etype}"] * (len(toks) - 1)


def _ner_sentence(rng: random.Random, pools: Pools) -> List[Tuple[str, str]]:
    template = rng.choice(NER_EMPTY if rng.random() < 0.1 else NER_TEMPLATES)
    out: List[Tuple[str, str]] = []
    used: Set[str] = set()
    for i, tok in enumerate(template.split()):
        if tok.startswith("{") and tok.endswith("}"):
            slot = tok[1:-1].rstrip("0123456789")
            if slot in ("PER", "TPER", "ORG", "LOC", "CITY"):
                for _ in range(100):
                    toks, tags = _ner_entity(slot, rng, pools)
                    if " ".join(toks) not in used:
                        break
                used.add(" ".join(toks))
                if i == 0:
                    toks = [cap(toks[0])] + toks[1:]
                out.extend(zip(toks, tags))
                continue
            value = {
                "DAY": lambda: rng.choice(DAYS),
                "MONTH": lambda: rng.choice(MONTHS),
                "YEAR": lambda: str(rng.randint(1990, 2023)),
                "NUM": lambda: rng.choice(["40", "120", "250", "300", "450", "600", "1,200", "2,500"]),
                "SMALL": lambda: rng.choice(["two", "three", "four", "five", "six"]),
                "PCT": lambda: str(rng.choice([2, 3, 4, 5, 6, 8, 10, 12, 15])),
            }[slot]()
            out.append((value, "O"))
        else:
            out.append((tok, "O"))
    return out


def make_entities(seed: int, held: Dict[str, Tuple[list, list]]) -> Dict[str, List[List[Tuple[str, str]]]]:
    out: Dict[str, List[List[Tuple[str, str]]]] = {}
    seen: Set[Tuple[str, ...]] = set()
    for split in ("train", "dev"):
        rng = random.Random(f"{seed}-entities-{split}")
        pools = Pools(rng, split, held)
        sents = []
        while len(sents) < SIZES[split]:
            sent = _ner_sentence(rng, pools)
            key = tuple(tok for tok, _ in sent)
            if key in seen:
                continue
            seen.add(key)
            sents.append(sent)
        out[split] = sents
    return out


# ---------------------------------------------------------------------------------------------
# Writing and checking
# ---------------------------------------------------------------------------------------------

def _clean(text: str) -> str:
    if "\t" in text or "\n" in text or "\r" in text:
        raise ValueError(f"tab or newline in generated text: {text!r}")
    return text


def write_tsv(path: Path, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write("\t".join(header) + "\n")
        for row in rows:
            f.write("\t".join(_clean(cell) for cell in row) + "\n")


def write_conll(path: Path, sentences: Sequence[Sequence[Tuple[str, str]]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for i, sent in enumerate(sentences):
            if i:
                f.write("\n")
            for tok, tag in sent:
                if not tok or " " in tok:
                    raise ValueError(f"bad token {tok!r}")
                f.write(f"{_clean(tok)}\t{tag}\n")


def build(seed: int = DEFAULT_SEED):
    """Returns {task: {split: rows}} for all three tasks."""
    sent_pools = {}
    for i, group in enumerate(SENT_GROUPS):
        sent_pools[f"subj:{group['domain']}:{i}"] = group["subjects"]
    held = split_pools(seed, {
        "first": FIRST_NAMES, "last": LAST_NAMES, "org": ORGS, "city": CITIES,
        "country": COUNTRIES, "product": PRODUCTS, "brand": BRANDS, "publisher": PUBLISHERS,
        **sent_pools,
    })
    return {
        "sentiment": make_sentiment(seed, held),
        "paraphrase": make_paraphrase(seed, held),
        "entities": make_entities(seed, held),
    }


def write_corpus(out: Path, seed: int = DEFAULT_SEED) -> List[Path]:
    data = build(seed)
    written = []
    for split in ("train", "dev"):
        p = out / "sentiment" / f"{split}.tsv"
        write_tsv(p, ("sentence", "label"), data["sentiment"][split])
        written.append(p)
        p = out / "paraphrase" / f"{split}.tsv"
        write_tsv(p, ("sentence1", "sentence2", "label"), data["paraphrase"][split])
        written.append(p)
        p = out / "entities" / f"{split}.conll"
        write_conll(p, data["entities"][split])
        written.append(p)
    return written


def main(argv: Sequence[str] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python tools/make_demo_corpus.py",
        description="Generate the synthetic demo corpus used by `kmtl demo`.",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help=f"output folder (default: {DEFAULT_OUT})")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED,
                        help=f"random seed (default: {DEFAULT_SEED})")
    args = parser.parse_args(argv)
    for path in write_corpus(args.out, args.seed):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
