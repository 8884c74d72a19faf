"""Runs a script with empty stand-ins for heavy packages that are missing and never used.

pytorch-grad-cam imports matplotlib, scipy and scikit-learn when it is imported, and
Captum imports matplotlib, for features (plots, PCA-based methods) that their Grad-CAM
paths never call. On a GPU machine without a package index those three would cost about
60 MB of wheels. This launcher puts an empty module in place of each of them that is not
installed, then runs the script::

    python benchmarks/stub_missing.py matplotlib,scipy,sklearn benchmarks/bench_gradcam.py ARGS

Anything that *uses* a stand-in fails loudly (calling it raises), so a stand-in can only
let an import through, never change a result; the harness checks every library's maps
against ours on every run. Installed packages are never replaced unless
``STUB_MISSING_FORCE=1`` (used to test this on a machine that has them).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import os
import runpy
import sys
import types


class _Placeholder:
    """What any attribute of a stand-in module is: importable, subclassable, never usable."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> _Placeholder:
        if attr.startswith("__"):
            raise AttributeError(attr)
        return _Placeholder(f"{self._name}.{attr}")

    def __call__(self, *args: object, **kwargs: object) -> object:
        raise RuntimeError(
            f"{self._name} is a stand-in (benchmarks/stub_missing.py): the package is not "
            "installed here; install it to use this feature"
        )

    def __mro_entries__(self, bases: tuple) -> tuple:
        return (object,)  # `class X(stub.Base)` defines a plain class


class _StandIn(types.ModuleType):
    def __getattr__(self, attr: str) -> _Placeholder:
        if attr.startswith("__"):
            raise AttributeError(attr)
        return _Placeholder(f"{self.__name__}.{attr}")


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def __init__(self, roots: set[str]) -> None:
        self.roots = roots

    def find_spec(self, fullname: str, path: object, target: object = None):
        if fullname.split(".")[0] not in self.roots:
            return None
        return importlib.machinery.ModuleSpec(fullname, self, is_package=True)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        module = _StandIn(spec.name)
        module.__path__ = []  # a package: submodules resolve through this finder too
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        pass


def install(names: list[str], *, force: bool = False) -> list[str]:
    """Puts stand-ins for the ``names`` that cannot be imported; returns those stood in for."""
    missing = [n for n in names if force or importlib.util.find_spec(n) is None]
    if missing:
        sys.meta_path.insert(0, _Finder(set(missing)))
    return missing


def main() -> None:
    if len(sys.argv) < 3:
        raise SystemExit("usage: stub_missing.py NAME[,NAME...] SCRIPT [ARGS...]")
    names = [n for n in sys.argv[1].split(",") if n]
    stood_in = install(names, force=os.environ.get("STUB_MISSING_FORCE") == "1")
    if stood_in:
        print(f"stub_missing: stand-ins for {', '.join(stood_in)} (not installed)", file=sys.stderr)
    script = sys.argv[2]
    sys.argv = sys.argv[2:]
    sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
