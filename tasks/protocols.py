"""The names of the protocols a task set can follow."""

GENERATED = ("within", "cross")  # drawn from a seed by tasks/episodes.py
OFFICIAL = "official"  # Lake et al.'s 20 fixed runs (tasks/official.py)
ALL = (*GENERATED, OFFICIAL)
