"""One module per op family: the parameters of its templates (see `codegen/params.py`)."""
