"""`movielens serve`: the HTTP service over the pipeline's models (FastAPI, uvicorn), and its page."""
