"""Griffe extension: document the names `synthcheck/__init__.py` exports lazily.

The package resolves `synthcheck.Detector` and the other names in `__all__` through a module-level
`__getattr__` (so `synthcheck --help` does not import torch), which static analysis cannot follow. For
every name in a package's `__all__` that the package does not define or import itself, this adds an
alias to the one object of that name defined in the package's submodules, wherever it lives, so the
API pages can say `::: synthcheck.Detector` and keep working when modules move.
"""

from __future__ import annotations

import griffe


def _definitions(module: griffe.Module, name: str, found: list) -> list:
    for member in module.members.values():
        if member.is_alias:
            continue
        if member.is_module:
            _definitions(member, name, found)
        elif member.name == name and member.parent is module and (member.is_class or member.is_function):
            found.append(member)
    return found


class LazyExports(griffe.Extension):
    def on_package(self, *, pkg: griffe.Module, **kwargs) -> None:
        for name in sorted(pkg.exports or ()):
            if not isinstance(name, str) or name in pkg.members or name.startswith("__"):
                continue
            found = _definitions(pkg, name, [])
            if len(found) != 1:
                where = ", ".join(obj.path for obj in found) or "nowhere"
                raise ValueError(f"{pkg.path}.__all__ names {name!r}, defined in {where}: expected exactly one")
            pkg.set_member(name, griffe.Alias(name, found[0], parent=pkg))
