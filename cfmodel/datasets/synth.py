"""A synthetic, MovieLens-100k-shaped data set with planted latent structure.

Users and items get latent taste vectors; each latent dimension is tied to a genre, so an item's
genres follow its vector and a user who likes one dimension likes that genre. Ratings are
`mean + user bias + item bias + u.v + noise`, rounded to 1-5 stars. Item popularity is long-tailed
and popular items are rated a little higher, as in the real data, and users rate mostly what suits
their taste, so that *which* items a user rated says something, as it does in real data. Files are written in the
`movielens-100k` layout (u.data, u.item in latin-1, u.genre) so the real ingest path reads them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cfmodel.ingest.layouts import MOVIELENS_100K_GENRES

ADJECTIVES = [
    "Silent",
    "Crimson",
    "Last",
    "Hidden",
    "Broken",
    "Golden",
    "Midnight",
    "Lost",
    "Wild",
    "Frozen",
    "Electric",
    "Distant",
    "Secret",
    "Burning",
    "Quiet",
    "Savage",
    "Little",
    "Endless",
    "Bitter",
    "Brave",
    "Hollow",
    "Velvet",
    "Iron",
    "Paper",
    "Señor",
    "Café",
    "Naïve",
    "Fatal",
    "Lucky",
    "Dark",
]
NOUNS = [
    "Harbor",
    "Kingdom",
    "Summer",
    "Detective",
    "Garden",
    "River",
    "Machine",
    "Letter",
    "Road",
    "Island",
    "Empire",
    "Dancer",
    "Witness",
    "Frontier",
    "Orchestra",
    "Storm",
    "Mirror",
    "Heist",
    "Planet",
    "Voyage",
    "Noël",
    "Café",
    "Reunion",
    "Circus",
    "Station",
    "Promise",
    "Signal",
    "Cowboy",
]
# Genres tied to each latent dimension (index into MOVIELENS_100K_GENRES, 'unknown' left out).
DIMENSION_GENRES = [[1, 2], [5, 14], [8, 18], [11, 16], [15, 9], [6, 13], [3, 4], [10, 17, 12]]
# How strongly taste (u . v) pulls a user toward rating an item, beside its popularity.
TASTE_PULL = 4.0


@dataclass(frozen=True)
class SynthSpec:
    n_users: int = 943
    n_items: int = 1682
    n_ratings: int = 100_000
    n_factors: int = len(DIMENSION_GENRES)
    noise: float = 0.6
    seed: int = 0


def sample_pairs(
    rng: np.random.Generator, spec: SynthSpec, user_vecs: np.ndarray, item_vecs: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Distinct (user, item) pairs: heavy-tailed user activity and item popularity, and, as people
    watch what they expect to like, items closer to a user's taste are more likely to be rated.
    Each user's items are drawn without replacement by the Gumbel-top-k trick, a block of users at
    a time."""
    target = min(spec.n_ratings, spec.n_users * spec.n_items)
    activity = rng.lognormal(0.0, 1.0, spec.n_users)
    per_user = np.minimum(rng.multinomial(target, activity / activity.sum()), spec.n_items)
    while (short := target - int(per_user.sum())) > 0:  # the most active hit the catalog's size
        room = spec.n_items - per_user
        weights = activity * (room > 0)
        per_user += np.minimum(rng.multinomial(short, weights / weights.sum()), room)
    popularity = 1.0 / np.arange(1, spec.n_items + 1) ** 0.9
    rng.shuffle(popularity)
    log_popularity = np.log(popularity)
    users, items = [], []
    block = max(1, 2_000_000 // spec.n_items)
    for start in range(0, spec.n_users, block):
        stop = min(start + block, spec.n_users)
        wanted = per_user[start:stop]
        keys = log_popularity + TASTE_PULL * (user_vecs[start:stop] @ item_vecs.T)
        keys += rng.gumbel(size=keys.shape)
        ranked = np.argsort(-keys, axis=1)
        for row, n in enumerate(wanted):
            users.append(np.full(n, start + row, np.int64))
            items.append(ranked[row, :n])
    users, items = np.concatenate(users), np.concatenate(items)
    order = rng.permutation(len(users))
    return users[order], items[order]


def generate(dest: str | Path, spec: SynthSpec = SynthSpec()) -> dict:
    rng = np.random.default_rng(spec.seed)
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    k = spec.n_factors
    user_vecs = rng.normal(0.0, 1.0, (spec.n_users, k)) / np.sqrt(k)
    item_vecs = rng.normal(0.0, 1.0, (spec.n_items, k)) / np.sqrt(k)
    user_bias = rng.normal(0.0, 0.4, spec.n_users)
    item_bias = rng.normal(0.0, 0.5, spec.n_items)

    users, items = sample_pairs(rng, spec, user_vecs, item_vecs)
    popularity_boost = 0.15 * np.log1p(np.bincount(items, minlength=spec.n_items))
    raw = (
        3.5
        + user_bias[users]
        + item_bias[items]
        + popularity_boost[items]
        - popularity_boost.mean()
        + 2.0 * np.einsum("ij,ij->i", user_vecs[users], item_vecs[items])
        + rng.normal(0.0, spec.noise, len(users))
    )
    ratings = np.clip(np.rint(raw), 1, 5).astype(np.int64)
    timestamps = np.sort(rng.integers(874_724_710, 893_286_638, len(users)))[rng.permutation(len(users))]

    with open(dest / "u.data", "w", encoding="ascii") as out:
        for u, i, r, t in zip(users + 1, items + 1, ratings, timestamps):
            out.write(f"{u}\t{i}\t{r}\t{t}\n")

    titles = set()
    with open(dest / "u.item", "w", encoding="latin-1") as out:
        for item in range(spec.n_items):
            base = title = f"The {rng.choice(ADJECTIVES)} {rng.choice(NOUNS)}"
            sequel = 1
            while title in titles:
                sequel += 1
                title = f"{base} {sequel}"
            titles.add(title)
            year = int(rng.integers(1930, 1999))
            flags = ["0"] * len(MOVIELENS_100K_GENRES)
            for dim in np.argsort(-item_vecs[item])[:2]:
                if item_vecs[item, dim] > 0:
                    flags[int(rng.choice(DIMENSION_GENRES[dim % len(DIMENSION_GENRES)]))] = "1"
            if "1" not in flags:
                flags[0] = "1"
            out.write(
                f"{item + 1}|{title} ({year})|01-Jan-{year}||http://example.invalid/{item + 1}|{'|'.join(flags)}\n"
            )

    with open(dest / "u.genre", "w", encoding="latin-1") as out:
        for index, name in enumerate(MOVIELENS_100K_GENRES):
            out.write(f"{name}|{index}\n")
        out.write("\n")

    return {"path": str(dest), "users": spec.n_users, "items": spec.n_items, "ratings": int(len(users))}
