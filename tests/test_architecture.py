"""The shape of the package: no import cycles (module-level or inside functions), config.py imports nothing of
ours but errors, no module grows far past 400 lines, and no module outside a method branches on its name."""

import ast
from pathlib import Path

from conftest import ROOT

PACKAGE = ROOT / "posttrain_dist"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def our_imports(path: Path) -> set[str]:
    """Every posttrain_dist module a file imports, wherever the import statement stands."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package
            for _ in range(max(node.level - 1, 0)):
                base = base.rsplit(".", 1)[0]
            target = (f"{base}.{node.module}" if node.module else base) if node.level else node.module or ""
            if target.startswith("posttrain_dist"):
                for alias in node.names:  # `from . import data` names a module; `from .data import x` the module
                    candidate = f"{target}.{alias.name}"
                    found.add(candidate if (PACKAGE.parent / (candidate.replace(".", "/") + ".py")).exists()
                              or (PACKAGE.parent / candidate.replace(".", "/")).is_dir() else target)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("posttrain_dist")}
    return found - {name}


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: {m for m in our_imports(path) if m in modules} for name, path in modules.items()}


def test_the_package_has_no_import_cycles():
    edges = graph()
    state, cycles = {}, []

    def visit(node, stack):
        state[node] = "open"
        for nxt in sorted(edges[node]):
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_config_is_configuration_only():
    assert our_imports(PACKAGE / "config.py") == {"posttrain_dist.errors", "posttrain_dist.limits"}
    assert our_imports(PACKAGE / "limits.py") == {"posttrain_dist.errors"}


def test_what_a_recipe_imports_first_is_light():
    """The recipes catch preemption signals before torch, transformers or trl load: `signals` imports the standard
    library only (and the package's __init__ nothing)."""
    for light in ("signals.py", "__init__.py"):
        tree = ast.parse((PACKAGE / light).read_text())
        imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names} | \
            {(n.module or "").split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and not n.level}
        assert imported <= {"os", "signal", "sys", "ctypes", "__future__", ""}, (light, imported)
    for recipe in (ROOT / "recipes").glob("*.py"):
        body = [n for n in ast.parse(recipe.read_text()).body if not isinstance(n, ast.Expr) or
                not isinstance(n.value, ast.Constant)]  # after the docstring
        if recipe.name != "__init__.py":
            assert ast.unparse(body[0]) == "from posttrain_dist import signals", recipe
            assert ast.unparse(body[1]) == "signals.catch_preemption()", recipe


def test_no_module_is_far_past_400_lines():
    long = {str(p.relative_to(ROOT)): n for p in PACKAGE.rglob("*.py") if (n := len(p.read_text().splitlines())) > 420}
    assert not long, long


def test_no_module_outside_a_method_branches_on_its_name():
    """A method is one place (posttrain_dist/methods/NAME.py, registered in methods/__init__.py): no other module
    compares with a method's name, keys a table by it or offers it as a choice. (Passing a name as a plain argument,
    as the identity demo does with "dpo", is not branching.)"""
    from posttrain_dist import methods

    names = set(methods.names())
    found = []
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel == "methods/__init__.py":
            continue
        own = {path.stem} if rel.startswith("methods/") else set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare):
                parts = [node.left, *node.comparators]
            elif isinstance(node, ast.Dict):
                parts = [k for k in node.keys if k is not None]
            elif isinstance(node, ast.keyword) and node.arg == "choices":
                parts = [node.value]
            else:
                continue
            named = {c.value for part in parts for c in ast.walk(part) if isinstance(c, ast.Constant)} & names
            found += [f"{rel}:{node.lineno} names {name!r}" for name in sorted(named - own)]
    assert not found, found
