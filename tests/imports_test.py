"""The package's import rules, read from the source (an AST walk, imports inside functions
included): each wing imports only the wings below it (``WINGS``, as docs/architecture.md
draws them), ``core`` imports no TensorFlow, nothing outside ``cli/`` imports the
command-line layer, and no module reaches itself through its imports."""

import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "simclr_tf")


def _modules():
    """{dotted name: path} of every module of the package."""
    found = {}
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                dotted = os.path.relpath(path[:-3], ROOT).replace(os.sep, ".")
                found[dotted.removesuffix(".__init__")] = path
    return found


def _imports(path, modules):
    """The package's modules that the module at ``path`` imports, anywhere in it."""
    targets = set()
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:  # "from simclr_tf import data" names a module
                candidate = f"{node.module}.{alias.name}"
                targets.add(candidate if candidate in modules else node.module)
        elif isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
    return {t for t in targets if t in modules and t != "simclr_tf"}


# Each wing and the wings it may import (besides itself): the layers of docs/architecture.md.
_BELOW_RUNS = {"core", "data", "models", "runs"}
WINGS = {
    "core": set(),
    "data": {"core"},
    "models": {"core"},
    "runs": {"core", "data", "models"},
    "interop": {"core", "data", "models", "runs"},
    "evaluation": _BELOW_RUNS,
    "evaluators": _BELOW_RUNS | {"evaluation"},
    "losses": {"core"},
    "training": _BELOW_RUNS | {"evaluation", "evaluators", "losses"},
    "tools": _BELOW_RUNS | {"evaluation", "evaluators", "losses", "training"},
    "bench": _BELOW_RUNS | {"evaluation", "evaluators", "losses", "training"},
    "cli": _BELOW_RUNS | {"interop", "evaluation", "evaluators", "losses", "training", "tools",
                          "bench"},
}


def _wing(module):
    """The wing of ``simclr_tf.<wing>.<module>`` (None for the package's own __init__)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def _graph():
    modules = _modules()
    return {name: _imports(path, modules) for name, path in modules.items()}


def test_nothing_outside_cli_imports_it():
    offenders = {name: sorted(t for t in targets if t.startswith("simclr_tf.cli"))
                 for name, targets in _graph().items() if not name.startswith("simclr_tf.cli")}
    assert {n: t for n, t in offenders.items() if t} == {}


def test_every_module_lives_in_a_wing():
    loose = sorted(m for m in _modules() if _wing(m) not in WINGS and m != "simclr_tf")
    assert loose == []


def test_each_wing_imports_only_the_wings_below_it():
    offenders = sorted(f"{name} imports {target}" for name, targets in _graph().items()
                       for target in targets
                       if _wing(name) in WINGS and _wing(target) != _wing(name)
                       and _wing(target) not in WINGS[_wing(name)])
    assert offenders == []


def test_core_needs_no_tensorflow():
    modules = _modules()
    heavy = {}
    for name, path in modules.items():
        if _wing(name) == "core":
            tree = ast.parse(open(path).read())
            found = {alias.name.split(".")[0] for node in ast.walk(tree)
                     if isinstance(node, (ast.Import, ast.ImportFrom))
                     for alias in (node.names if isinstance(node, ast.Import)
                                   else [ast.alias(node.module or "")])}
            heavy[name] = sorted(found & {"tensorflow", "tf_keras", "keras", "numpy"})
    assert heavy and all(not found for found in heavy.values()), heavy


def test_no_import_circles():
    graph, circles = _graph(), []

    def visit(name, path):
        for target in sorted(graph[name]):
            if target in path:
                circles.append(path[path.index(target):] + [target])
            elif target not in done:
                visit(target, path + [target])
        done.add(name)

    done = set()
    for name in sorted(graph):
        if name not in done:
            visit(name, [name])
    assert circles == []


def test_the_walk_sees_imports_inside_functions():
    graph = _graph()  # the rule tests above are only as good as this reading
    assert "simclr_tf.bench.loss_scaling" in graph["simclr_tf.bench.suite"]  # inside a function
    assert "simclr_tf.core.config" in graph["simclr_tf.cli.flags"]


def test_the_architecture_doc_lists_every_module_once():
    """docs/architecture.md has a table per wing (``### <wing>``) naming its modules: they
    are the files of the package, one to one."""
    import re  # noqa: PLC0415

    with open(os.path.join(ROOT, "docs", "architecture.md")) as f:
        doc = f.read()
    listed = []
    for section in re.split(r"^### ", doc, flags=re.M)[1:]:
        wing, rows = section.split("\n", 1)[0].strip(), section.split("\n## ")[0]
        for row in rows.splitlines():
            if row.startswith("| `"):
                listed += [f"simclr_tf/{wing}/{name}"
                           for name in re.findall(r"`([a-z_/0-9]+\.py)`", row.split(" | ")[0])]
    files = sorted(os.path.relpath(path, ROOT) for name, path in _modules().items()
                   if not path.endswith("__init__.py") or name == "simclr_tf.cli")
    assert sorted(listed) == files
