"""The MovieLens releases: their table, the download and the preprocessing (parsing, splitting, encoding)."""
