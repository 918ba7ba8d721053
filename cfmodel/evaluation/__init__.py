"""Evaluation: rating and top-N metrics on held-out ratings, beside the most-popular baseline."""

# How `cfrec evaluate --input` splits one rating file: each user's latest ratings, or a random part.
HOLDOUTS = ("user-time", "random")
