"""The protocols of the test split and of the cross-validation folds (`preprocess.split`).

random: ratings drawn at random (seeded); user: each user's ratings split apart; time: the latest
ratings held out. movielens.data.preprocess.split_ratings and
movielens.evaluation.crossvalidation.assign_folds implement them; docs/protocols.md explains them.
"""

SPLITS = ("random", "user", "time")
