"""The Triton interpreter, made cheaper for the suite without changing what it computes.

A kernel's launch (`GridExecutor.__call__`) patches the `triton.language` modules its
function sees for the whole grid, and restores them after. Every call of a `@triton.jit`
helper inside the kernel (`InterpretedFunction.__call__`) patches them again, in every
program of the grid, and never restores: a patch over a patch finds no builtin left to
replace, so it changes nothing, but it walks the modules with `inspect.getmembers` each
time, a quarter of an interpreted decode step of the tiny model (cProfile: 74.7 of 288 s
in `_patch_lang`, 7989 helper calls against 99 launches). Here a helper's patch is skipped
while the running launch has patched the same modules; the launch's own patch and restore
are Triton's. Nothing changes where the interpreter has no `_patch_lang` or no
`_LangPatchScope` (the launch's restorable patch this relies on: other versions).
"""

from __future__ import annotations


def skip_repeated_lang_patches() -> None:
    try:
        import triton.language as tl
        from triton.runtime import interpreter
    except ImportError:
        return
    patch = getattr(interpreter, "_patch_lang", None)
    if patch is None or not hasattr(interpreter, "_LangPatchScope"):
        return  # an interpreter whose launch does not restore a patch scope: left as it is
    patched: set[int] = set()  # the modules patched since the running launch began

    class Scope:
        """What `_patch_lang` returns: the launch restores it when its grid is done."""

        def __init__(self, scope=None):
            self.scope = scope

        def restore(self) -> None:
            patched.clear()
            if self.scope is not None:
                self.scope.restore()

    def patch_once(fn):
        modules = {id(v) for v in fn.__globals__.values() if v is tl or v is tl.core}
        if modules and modules <= patched:
            return Scope()  # a helper inside the launch: already patched
        scope = patch(fn)
        patched.update(modules)
        return Scope(scope)

    interpreter._patch_lang = patch_once
