"""v4c: a declarative graph compiler and runtime for the DeepSeek-V4 model family.

Importing `v4c` is light: the spec schema needs only pydantic and pyyaml, so the IR can
depend on it and the CLI starts fast. torch, triton and networkx are imported by the
packages that need them.
"""

from v4c.errors import SpecError, V4CError
from v4c.spec import ModelSpec, load_spec

__version__ = "0.1.0"

__all__ = ["ModelSpec", "SpecError", "V4CError", "load_spec", "__version__"]
