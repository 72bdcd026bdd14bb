"""The toy world: templated documents whose latent content (topic, people, cities, final word) is known exactly.

Each document picks one of 8 topics, one or two people and one or two cities, and writes 4-6 sentences from that
topic's templates. `teacher_explanation` writes what a teacher model would say about a text prefix, in the release's
form: 2-3 features, most important first, the last about the very end of the text, separated by blank lines.
Deterministic given the seed. It does not tokenise (toy/tokenizer.py) or train anything.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

PEOPLE = ("alice", "bruno", "chen", "dara", "elena", "farid", "greta", "hugo",
          "ines", "jonas", "kira", "leo", "maya", "nadia", "omar", "priya")
CITIES = ("paris", "tokyo", "lima", "cairo", "oslo", "dublin", "quito", "seoul",
          "rome", "austin", "perth", "nairobi", "lisbon", "denver", "hanoi", "zurich")

# topic -> (nouns, sentence templates). Slots: {p} person, {c} city, {n} and {m} topic nouns.
TOPICS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "sports": (("goal", "match", "team", "coach", "stadium", "ball", "league", "trophy"), (
        "{p} scored a late {n} for the {m} in {c} .", "the {n} in {c} was full when {p} arrived .",
        "{p} trained with the {n} every morning .", "fans in {c} cheered as the {n} ended .",
        "{p} said the {n} will win the {m} .")),
    "weather": (("rain", "storm", "snow", "wind", "cloud", "heat", "forecast", "flood"), (
        "a heavy {n} moved over {c} last night .", "{p} watched the {n} from a window in {c} .",
        "the {n} in {c} closed the roads for days .", "{p} said the {n} would bring more {m} .",
        "people in {c} prepared for the {n} .")),
    "cooking": (("soup", "bread", "pasta", "recipe", "kitchen", "garlic", "oven", "sauce"), (
        "{p} cooked a {n} with fresh {m} in {c} .", "the {n} needs an hour in the {m} .",
        "{p} opened a small {n} shop in {c} .", "add the {n} slowly and stir the {m} .",
        "a famous {n} from {c} uses {m} .")),
    "music": (("song", "guitar", "concert", "album", "piano", "band", "melody", "drum"), (
        "{p} played the {n} at a {m} in {c} .", "the {n} from {c} released a new {m} .",
        "{p} wrote a {n} about {c} .", "the crowd in {c} sang every {n} .",
        "{p} practiced the {n} until the {m} sounded right .")),
    "travel": (("train", "flight", "hotel", "map", "ticket", "border", "museum", "beach"), (
        "{p} took a {n} from {c} at dawn .", "the {n} in {c} was cheaper than the {m} .",
        "{p} lost a {n} near the {m} in {c} .", "visitors to {c} love the old {n} .",
        "{p} booked a {n} and a {m} for the trip .")),
    "science": (("experiment", "telescope", "cell", "atom", "laboratory", "theory", "sample", "data"), (
        "{p} ran an {n} in a {m} in {c} .", "the {n} from {c} confirmed the {m} .",
        "{p} measured each {n} twice .", "researchers in {c} shared the {n} with {p} .",
        "a new {n} changed the {m} .")),
    "finance": (("bank", "market", "loan", "stock", "budget", "price", "tax", "profit"), (
        "{p} moved the {n} from {c} to a new {m} .", "the {n} in {c} fell again today .",
        "{p} asked the {n} about a {m} .", "traders in {c} watched the {n} closely .",
        "a higher {n} hurt the {m} .")),
    "health": (("doctor", "hospital", "fever", "medicine", "nurse", "clinic", "vaccine", "patient"), (
        "{p} visited the {n} in {c} for a {m} .", "the {n} in {c} hired another {m} .",
        "{p} needed {n} after the {m} .", "a {n} from {c} helped {p} recover .",
        "the {n} said the {m} was mild .")),
}


@dataclass
class Doc:
    doc_id: str
    text: str
    topic: str
    people: tuple[str, ...]
    cities: tuple[str, ...]


def make_doc(rng: random.Random, doc_id: str) -> Doc:
    topic = rng.choice(sorted(TOPICS))
    nouns, templates = TOPICS[topic]
    people = tuple(rng.sample(PEOPLE, rng.choice((1, 2))))
    cities = tuple(rng.sample(CITIES, rng.choice((1, 2))))
    sentences = []
    for _ in range(rng.randint(4, 6)):
        n, m = rng.sample(nouns, 2)
        sentences.append(rng.choice(templates).format(p=rng.choice(people), c=rng.choice(cities), n=n, m=m))
    return Doc(doc_id=doc_id, text=" ".join(sentences), topic=topic, people=people, cities=cities)


def generate_corpus(n_docs: int, seed: int) -> list[Doc]:
    rng = random.Random(seed)
    return [make_doc(rng, f"toy-{seed}-{i:06d}") for i in range(n_docs)]


def teacher_explanation(doc: Doc, prefix: str) -> str:
    """2-3 features of the prefix, most important first; the last is about its very end."""
    words = prefix.split()
    features = [f"The text is about {doc.topic}."]
    named = [w for w in dict.fromkeys(words) if w in doc.people or w in doc.cities]
    if named:
        features.append("It mentions " + " and ".join(named) + ".")
    end = " ".join(words[-2:])
    features.append(f"It ends with \"{end}\".")
    return "\n\n".join(features)


def vocabulary_texts() -> list[str]:
    """Every word the world and its explanations use, for tokenizer training."""
    words = set(PEOPLE) | set(CITIES) | set(TOPICS)
    for nouns, templates in TOPICS.values():
        words |= set(nouns)
        for t in templates:
            words |= {w for w in t.split() if not w.startswith("{")}
    return [" ".join(sorted(words))]
