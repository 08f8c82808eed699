"""Capture preprocessing functions by source, with everything they need from the notebook.

A function is captured together with the names it reads: other notebook functions and classes
(by source), modules and library objects (as imports) and literal constants (as assignments).
Whatever cannot be written as source (an open file, a fitted object, a lambda inside a dict,
a name defined nowhere) raises :class:`~nbmlops.errors.CaptureError` naming it.
"""

from __future__ import annotations

import builtins
import importlib
import inspect
import io
import math
import symtable
import sys
import sysconfig
import textwrap
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nbmlops.errors import CaptureError

_LIBRARY_ROOTS = tuple(
    Path(p).resolve()
    for key in ("stdlib", "platstdlib", "purelib", "platlib")
    if (p := sysconfig.get_paths().get(key))
)


@dataclass(frozen=True)
class CapturedCode:
    """Readable Python source defining ``functions`` and everything they use."""

    source: str
    functions: tuple[str, ...]
    modules: tuple[str, ...]

    def to_dict(self) -> dict:
        return {"functions": list(self.functions), "modules": list(self.modules)}


def capture(functions: Sequence[Callable]) -> CapturedCode:
    """Capture ``functions`` (applied in order) as one self-contained module source."""
    capturer = _Capturer()
    names = []
    for fn in functions:
        capturer.add_entry(fn)
        names.append(fn.__name__)
    source = capturer.render()
    compile(source, "<nbmlops captured code>", "exec")
    return CapturedCode(source=source, functions=tuple(names), modules=capturer.modules())


class _Capturer:
    def __init__(self) -> None:
        self.imports: dict[str, str] = {}
        self.constants: dict[str, str] = {}
        self.definitions: dict[str, str] = {}
        self.bound: dict[str, object] = {}
        self.top_modules: set[str] = set()

    def add_entry(self, fn: Callable) -> None:
        if not isinstance(fn, types.FunctionType):
            raise CaptureError(
                getattr(fn, "__name__", repr(fn)),
                [f"{fn!r} is not a Python function defined with def; pass a function name"],
            )
        problems: list[str] = []
        self._add_definition(fn.__name__, fn, problems, entry=fn.__name__)
        if problems:
            raise CaptureError(fn.__name__, problems)

    def _bind(self, name: str, value: object, problems: list[str]) -> bool:
        """Record that ``name`` means ``value``; False when it already means something else."""
        known = self.bound.get(name, _MISSING)
        if known is _MISSING:
            self.bound[name] = value
            return True
        if known is not value:
            problems.append(
                f"'{name}' refers to two different objects in the captured code; rename one"
            )
        return False

    def _add_definition(self, name: str, obj: object, problems: list[str], entry: str) -> None:
        if not self._bind(name, obj, problems):
            return
        func = inspect.unwrap(obj)
        if isinstance(func, types.FunctionType) and func.__name__ == "<lambda>":
            suggested = name if name.isidentifier() else "my_step"
            problems.append(
                f"'{name}' is a lambda; lambdas cannot be captured by source. "
                f"Define it with def {suggested}(frame): ..."
            )
            return
        if isinstance(func, types.FunctionType) and func.__closure__:
            free = ", ".join(func.__code__.co_freevars)
            problems.append(
                f"'{name}' is a closure over {free} from an enclosing function; "
                "define it at the top level of a cell"
            )
            return
        try:
            source = textwrap.dedent(inspect.getsource(obj))
        except (OSError, TypeError):
            problems.append(
                f"the source of '{name}' is not available (was it made by exec or pickled?); "
                "define it in a notebook cell or a .py file"
            )
            return
        own_name = obj.__name__
        if own_name != name:
            self._add_definition(own_name, obj, problems, entry)
            self.definitions[name] = f"{name} = {own_name}\n"
            return
        namespace = func.__globals__ if isinstance(func, types.FunctionType) else _module_dict(obj)
        for free in sorted(_free_names(source, own_name)):
            self._add_name(free, namespace, problems, entry)
        self.definitions[name] = source

    def _add_name(self, name: str, namespace: dict, problems: list[str], entry: str) -> None:
        if name not in namespace:
            if hasattr(builtins, name):
                return
            problems.append(
                f"name '{name}' is used by the preprocessing code but defined nowhere "
                "(not in the notebook, not a builtin); define it or remove the reference"
            )
            return
        value = namespace[name]
        if isinstance(value, types.ModuleType):
            if self._bind(name, value, problems):
                self._add_import(name, value, problems)
            return
        if callable(value) and hasattr(value, "__name__") and _is_user_code(value):
            self._add_definition(name, value, problems, entry)
            return
        if callable(value) and _importable_path(value) is not None:
            if self._bind(name, value, problems):
                module, qualname = _importable_path(value)
                alias = "" if qualname == name else f" as {name}"
                self.imports[name] = f"from {module} import {qualname}{alias}"
                self.top_modules.add(module.split(".")[0])
            return
        try:
            literal = _literal_source(value)
        except _NotLiteral as exc:
            problems.append(_describe_uncapturable(name, value, str(exc)))
            return
        if self._bind(name, value, problems):
            self.constants[name] = f"{name} = {literal}"

    def _add_import(self, name: str, module: types.ModuleType, problems: list[str]) -> None:
        module_name = module.__name__
        if module_name == "__main__" or _is_user_code(module):
            problems.append(
                f"'{name}' is the local module {module_name}, which a server will not have; "
                "put the functions you need from it in the notebook, or install it as a package"
            )
            return
        alias = "" if module_name == name else f" as {name}"
        self.imports[name] = f"import {module_name}{alias}"
        self.top_modules.add(module_name.split(".")[0])

    def modules(self) -> tuple[str, ...]:
        return tuple(sorted(self.top_modules))

    def render(self) -> str:
        parts = [
            '"""Preprocessing captured from the notebook by nbmlops. Do not edit: '
            'manifest.json records its hash."""'
        ]
        if self.imports:
            parts.append("\n".join(sorted(self.imports.values())))
        if self.constants:
            parts.append("\n".join(self.constants.values()))
        parts.extend(src.rstrip("\n") for src in self.definitions.values())
        return "\n\n\n".join(parts) + "\n"


_MISSING = object()


class _NotLiteral(Exception):
    pass


def _free_names(source: str, own_name: str) -> set[str]:
    """Global names read by the definition in ``source`` (including defaults and decorators)."""
    table = symtable.symtable(source, "<capture>", "exec")
    names: set[str] = set()
    for sym in table.get_symbols():
        if sym.is_referenced() and not sym.is_imported() and sym.get_name() != own_name:
            names.add(sym.get_name())
    stack = list(table.get_children())
    while stack:
        child = stack.pop()
        for sym in child.get_symbols():
            if sym.is_global() and sym.is_referenced():
                names.add(sym.get_name())
        stack.extend(child.get_children())
    names.discard(own_name)
    return names


def _module_dict(obj: object) -> dict:
    module = sys.modules.get(getattr(obj, "__module__", "") or "")
    return vars(module) if module is not None else {}


def _is_user_code(obj: object) -> bool:
    """True for code that lives in the notebook or in a local file, not in an installed package."""
    if isinstance(obj, types.ModuleType):
        module_name = obj.__name__
    else:
        module_name = getattr(obj, "__module__", None)
    if module_name is None:
        return False
    if module_name == "__main__":
        return True
    module = sys.modules.get(module_name)
    path = getattr(module, "__file__", None)
    if path is None:
        return False
    resolved = Path(path).resolve()
    return not any(resolved.is_relative_to(root) for root in _LIBRARY_ROOTS)


def _importable_path(value: object) -> tuple[str, str] | None:
    """``(module, qualname)`` under which ``value`` can be imported, or None."""
    module = getattr(value, "__module__", None)
    qualname = getattr(value, "__qualname__", None) or getattr(value, "__name__", None)
    if not module or not qualname or module == "__main__" or "<" in qualname:
        return None
    if "." in qualname:
        return None
    try:
        found = getattr(importlib.import_module(module), qualname)
    except (ImportError, AttributeError):
        return None
    return (module, qualname) if found is value else None


def _literal_source(value: object) -> str:
    """Python source that rebuilds ``value`` exactly, for plain data only."""
    if value is None or type(value) in (bool, str, bytes):
        return repr(value)
    if isinstance(value, np.bool_):
        return repr(bool(value))
    if isinstance(value, (np.str_, np.bytes_)):
        return repr(value.item())
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return repr(int(value))
    if isinstance(value, (float, np.floating)):
        number = float(value)
        if math.isnan(number):
            return 'float("nan")'
        if math.isinf(number):
            return 'float("inf")' if number > 0 else 'float("-inf")'
        return repr(number)
    if isinstance(value, (list, tuple, set, frozenset)):
        items = [_literal_source(v) for v in value]
        if isinstance(value, list):
            return "[" + ", ".join(items) + "]"
        if isinstance(value, tuple):
            return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"
        body = "{" + ", ".join(sorted(items)) + "}" if items else "set()"
        return body if isinstance(value, set) else f"frozenset({body})"
    if isinstance(value, dict):
        entries = []
        for key, item in value.items():
            try:
                entries.append(f"{_literal_source(key)}: {_literal_source(item)}")
            except _NotLiteral as exc:
                raise _NotLiteral(f"its entry {key!r} holds {exc}") from None
        return "{" + ", ".join(entries) + "}"
    raise _NotLiteral(_kind_of(value))


def _kind_of(value: object) -> str:
    if isinstance(value, types.FunctionType) and value.__name__ == "<lambda>":
        return "a lambda"
    if callable(value) and not isinstance(value, type):
        return f"a function ({type(value).__name__})"
    return f"a {type(value).__module__}.{type(value).__qualname__} object"


def _describe_uncapturable(name: str, value: object, kind: str) -> str:
    if isinstance(value, io.IOBase):
        return (
            f"'{name}' is an open file ({type(value).__name__}); an open file cannot be "
            "captured: open the file inside the function, or read what you need into a "
            "literal constant"
        )
    if isinstance(value, (list, tuple, set, frozenset, dict)):
        return (
            f"'{name}' is a {type(value).__name__} but {kind}; only plain data (numbers, "
            "strings, lists, dicts of those) can be captured as a constant. Use named "
            "functions defined with def instead of lambdas"
        )
    return (
        f"'{name}' is {kind}; only functions, classes, modules and literal constants can be "
        "captured by source. Fit objects inside --model (for example as a Pipeline step) or "
        "turn the value into a literal constant"
    )
