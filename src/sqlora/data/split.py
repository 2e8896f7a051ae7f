"""A dev set split off by database, for data that comes without one.

Whole databases go to dev, so that no database is on both sides and the dev score says how the
model does on databases it has not seen (as Spider's and BIRD's dev sets do). The databases are
shuffled with a seeded generator (the same seed, the same split on every machine) and taken in
that order until dev holds `fraction` of the questions; at least one database stays in train.
"""

from __future__ import annotations

import random
from collections import Counter

from ..core.errors import SqloraError


def split_by_database(examples: list[dict], fraction: float, seed: int) -> tuple[list[dict], list[dict], list[str]]:
    """(train, dev, the dev databases), each list in the examples' order."""
    counts = Counter(example["db_id"] for example in examples)
    if len(counts) < 2:
        raise SqloraError(f"the training questions use {len(counts)} database: splitting off a dev set by "
                          "database needs two or more (or give a dev file, such as dev.jsonl)")
    order = sorted(counts)
    random.Random(seed).shuffle(order)
    wanted = fraction * len(examples)
    dev_databases: list[str] = []
    taken = 0
    for db_id in order[:-1]:  # the last one always stays in train
        if dev_databases and taken >= wanted:
            break
        dev_databases.append(db_id)
        taken += counts[db_id]
    chosen = set(dev_databases)
    train = [example for example in examples if example["db_id"] not in chosen]
    dev = [example for example in examples if example["db_id"] in chosen]
    return train, dev, sorted(dev_databases)
