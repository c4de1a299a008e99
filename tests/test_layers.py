"""The house plan holds: each layer of dd imports only the layers below it.

From the bottom up: core; then transfer, broker and store, which know only core and
never each other; flow; delivery and source, which never know each other; pump;
components, which never import one another; admin; cli.  README.rst's developer
section draws the same picture."""
import ast
from pathlib import Path

import pytest

import dd

ROOT = Path(dd.__file__).parent
#: Each layer, and the layers it may import (besides itself).
MAY_IMPORT = {
    "core": set(),
    "transfer": {"core"},
    "broker": {"core"},
    "store": {"core"},
    "flow": {"core", "broker", "store"},
    "delivery": {"core", "transfer", "broker", "store", "flow"},
    "source": {"core", "transfer", "store", "flow"},
    "pump": {"core", "transfer", "broker", "store", "flow", "delivery"},
    "components": {"core", "transfer", "broker", "store", "flow", "delivery", "source", "pump"},
    "admin": {"core", "transfer", "broker", "store", "flow", "delivery", "source", "pump", "components"},
    "cli": {"core", "transfer", "broker", "store", "flow", "delivery", "source", "pump", "components", "admin"},
}


def modules():
    return sorted(p for p in ROOT.rglob("*.py") if p.parent != ROOT or p.name != "__init__.py")


def module_name(path):
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path):
    """The dd modules `path` imports, wherever in the file (function-level ones too)."""
    found = set()
    package = module_name(path).rsplit(".", 1)[0] if path.name != "__init__.py" else module_name(path)
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.split(".")[0] == "dd"}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + [base]).rstrip(".")
            if base.split(".")[0] != "dd":
                continue
            found |= {f"{base}.{alias.name}" if base == "dd" else base for alias in node.names}
    return found


def layer(module):
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in MAY_IMPORT else None


def test_every_module_lives_in_a_layer():
    loose = [module_name(p) for p in modules() if layer(module_name(p)) is None]
    assert not loose, f"modules outside the layers: {loose}"


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_a_module_imports_only_the_layers_below_its_own(path):
    here = module_name(path)
    mine = layer(here)
    upward = sorted(m for m in imports(path)
                    if layer(m) not in (None, mine) and layer(m) not in MAY_IMPORT[mine])
    assert not upward, f"{here} ({mine}) imports {upward}"


@pytest.mark.parametrize("path", sorted((ROOT / "components").glob("*.py")), ids=lambda p: p.name)
def test_components_never_import_each_other(path):
    others = {f"dd.components.{p.stem}" for p in (ROOT / "components").glob("*.py")} - {module_name(path)}
    assert not imports(path) & others
