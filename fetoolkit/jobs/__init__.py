"""The jobs: one module per ``python -m`` entry. Nothing imports these modules."""
