"""The databases `python -m tfrecords_builder` knows: every `Builder` subclass with a NAME in this package.

Adding a database = adding one module here; it is found by name, nothing else to edit.
"""
from __future__ import annotations

import importlib
import pkgutil

# Modules of the package that are machinery, not databases.
_NOT_BUILDERS = frozenset({"__main__", "base", "beam_pipeline", "registry", "writer"})

_databases: dict | None = None


def databases() -> dict:
    """{database name: builder class}, sorted by name (modules are imported on first call)."""
    global _databases
    if _databases is None:
        from tfrecords_builder.base import Builder

        import tfrecords_builder

        found = {}
        for module_info in pkgutil.iter_modules(tfrecords_builder.__path__):
            if module_info.name in _NOT_BUILDERS or module_info.name.startswith("_"):
                continue
            module = importlib.import_module(f"tfrecords_builder.{module_info.name}")
            for value in vars(module).values():
                if (isinstance(value, type) and issubclass(value, Builder) and value.NAME
                        and value.__module__ == module.__name__):
                    if value.NAME in found and found[value.NAME] is not value:
                        raise RuntimeError(f"database name {value.NAME!r} is defined twice: "
                                           f"{found[value.NAME].__module__} and {module.__name__}")
                    found[value.NAME] = value
        _databases = dict(sorted(found.items()))
    return _databases


def get_builder(name: str):
    """The builder class of `name`; KeyError listing the known databases otherwise."""
    known = databases()
    if name not in known:
        raise KeyError(f"unknown database {name!r}; known: {', '.join(known)}")
    return known[name]
