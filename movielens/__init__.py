"""MovieLens recommendations: data, the Keras rating model and its engines, the will-watch model,
the served ranking, evaluation.

Folders by job, each importing only the ones above it in this list: plumbing (paths, errors,
atomic files, the runtime set-up), data (releases, download, preprocessing, splits), model (the
rating model, the bias baseline, the will-watch model), training (the engines and their one epoch
loop), ranking (the scoring formula, scorers, the served formula, top-k lists), evaluation
(metrics), serve (what `movielens recommend` and `similar` answer), synth (the data generator),
then the command line (cli). params.py, params.yaml's schema and loader, is read only by the entry
points: the stage scripts in stages/, the CLI and the benchmarks. Importing the package changes
nothing: each entry point calls movielens.plumbing.runtime.set_up.
"""
