"""The MovieLens releases: their table, download, preprocessing, split rules and id tables."""
