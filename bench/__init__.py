"""The labelqa benchmark: `python -m bench --annotations N` (see `bench/__main__.py`)."""
