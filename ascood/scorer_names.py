"""The registered scorers' names, without their code: what configs and sweep files validate
against (a refusal of a bad input never imports torch). `tests/test_imports.py` checks that this
list is the registry's, in its order."""

SCORER_NAMES = (
    "msp", "maxlogit", "energy", "gen", "odin", "iodin", "react", "ash", "scale", "knn", "mds", "rmds", "vim",
    "relation", "nnguide", "fdbd", "nci", "neco", "vra", "gradnorm", "dice", "she", "klm", "mdspp", "adascale",
)
