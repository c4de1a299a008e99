"""The typed packages say what each public function takes and returns.

mypy checks them (tools/test runs it; pyproject.toml's [tool.mypy] says how), and its `files`
are the one list of typed packages: this test reads the same list.  It holds the rule itself,
whatever mypy's settings: every public function and method (a name without a leading '_';
special methods such as __init__ are public) annotates each parameter but self/cls, and its
return."""
import ast
import sys
from pathlib import Path

import pytest

import dd

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib     # pytest's own dependency before Python 3.11

REPO = Path(dd.__file__).parent.parent
#: The packages whose public functions must be annotated: mypy's files, e.g. "dd/core".
TYPED = tuple(tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["mypy"]["files"])


def _public(name):
    return not name.startswith("_") or (name.startswith("__") and name.endswith("__"))


def _missing(function, method):
    """The names of `function`'s parameters without an annotation, and 'return' if it has none."""
    arguments = function.args
    positional = [*arguments.posonlyargs, *arguments.args]
    static = any(isinstance(d, ast.Name) and d.id == "staticmethod" for d in function.decorator_list)
    if method and not static:
        positional = positional[1:]     # self, or cls
    every = [*positional, *arguments.kwonlyargs, arguments.vararg, arguments.kwarg]
    missing = [a.arg for a in every if a is not None and a.annotation is None]
    return missing + (["return"] if function.returns is None else [])


def unannotated(body, prefix="", method=False):
    """(qualified name, what it misses) for each public function or method of a public class
    in `body` (a module's or a class's statements) that misses an annotation."""
    found = []
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and _public(node.name):
            missing = _missing(node, method)
            if missing:
                found.append((prefix + node.name, missing))
        elif isinstance(node, ast.ClassDef) and _public(node.name):
            found += unannotated(node.body, f"{prefix}{node.name}.", method=True)
    return found


def test_the_rule_sees_every_missing_annotation():
    source = """
def plain(a, b: int, *args, key=1, **options) -> int: ...
def _helper(a): ...
class Thing:
    def __init__(self, size): ...
    def method(self, x: int): ...
    @staticmethod
    def static(z) -> None: ...
    @classmethod
    def make(cls) -> "Thing": ...
    def _hidden(self, w): ...
    class Inner:
        def deep(self): ...
class _Hidden:
    def method(self, v): ...
"""
    assert unannotated(ast.parse(source).body) == [
        ("plain", ["a", "key", "args", "options"]),
        ("Thing.__init__", ["size", "return"]),
        ("Thing.method", ["return"]),
        ("Thing.static", ["z"]),
        ("Thing.Inner.deep", ["return"]),
    ]


def test_the_typed_packages_are_packages_of_dd():
    assert TYPED, "pyproject.toml's [tool.mypy] files names no package"
    for package in TYPED:
        assert (REPO / package / "__init__.py").is_file(), f"{package} is not a package"
        assert Path(package).parts[0] == "dd", f"{package} is not part of dd"


@pytest.mark.parametrize("package", TYPED)
def test_every_public_function_is_annotated(package):
    missing = [f"{path.relative_to(REPO)}: {name} has no annotation for {', '.join(what)}"
               for path in sorted((REPO / package).rglob("*.py"))
               for name, what in unannotated(ast.parse(path.read_text(encoding="utf-8")).body)]
    assert not missing, "\n".join(missing)
