"""The protocols a task set can follow: their names, where their episodes are drawn from, and
which split their methods are fitted on.

- `within`, `cross`: Lake et al.'s background/evaluation split (30 and 20 alphabets); N
  characters of one evaluation alphabet, or of any.
- `official`: Lake et al.'s 20 fixed runs (tasks/official.py), evaluation images.
- `vinyals`: Vinyals et al.'s (2016) split, characters in 4 rotations counted as 4 classes
  (tasks/vinyals.py): N classes of the 1692 test classes; methods fit on the 4800 trainval
  classes.
"""

GENERATED = ("within", "cross", "vinyals")  # drawn from a seed by tasks/episodes.py
OFFICIAL = "official"  # Lake et al.'s 20 fixed runs (tasks/official.py)
VINYALS = "vinyals"
ALL = (*GENERATED, OFFICIAL)

# The splits a task set of each protocol may draw its episodes from; the first is its default.
# A training split among them measures on the training classes themselves (overfitting).
EPISODE_SPLITS = {"within": ("evaluation", "background"), "cross": ("evaluation", "background"),
                  OFFICIAL: ("evaluation",), VINYALS: ("vinyals_test", "vinyals_trainval")}
# What a method is fitted on before it meets the protocol's episodes: never a test class.
TRAINING_SPLIT = {"within": "background", "cross": "background", OFFICIAL: "background",
                  VINYALS: "vinyals_trainval"}
SPLITS = tuple(dict.fromkeys(split for splits in EPISODE_SPLITS.values() for split in splits))
# How tables and figures name the images of each split.
SPLIT_DESCRIPTIONS = {"evaluation": "evaluation alphabets", "background": "background alphabets",
                      "vinyals_test": "Vinyals test classes", "vinyals_trainval": "Vinyals trainval classes"}
