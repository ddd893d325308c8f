"""What `movielens recommend` and `similar` need beside the ranking: loading the saved artifacts, and text."""
