"""Ranking: the scoring formula, the scorers, the served formula (will-watch x will-like) and top-k lists."""
