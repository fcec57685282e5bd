"""Build the optional native fast path (emu/native/_fastpath.c + mirror.c) against the headers
that Unicorn's wheel ships. `optional=True`: without a C compiler the package installs anyway
and the pure-Python fallback runs (identical results, slower)."""
import os

from setuptools import Extension, setup


def unicorn_include() -> list[str]:
    try:
        import unicorn
    except ImportError:
        return []
    return [os.path.join(os.path.dirname(unicorn.__file__), "include")]


setup(ext_modules=[Extension("emu.native._fastpath",
                             ["emu/native/_fastpath.c", "emu/native/mirror.c"],
                             depends=["emu/native/fastpath.h"],
                             include_dirs=unicorn_include(), optional=True,
                             extra_compile_args=["-O2", "-Wall", "-Wextra"])])
