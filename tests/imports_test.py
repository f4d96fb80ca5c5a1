"""The package's import rules, read from the source (an AST walk, imports inside functions
included): nothing outside ``cli/`` imports the command-line layer, and no module reaches
itself through its imports."""

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


def _graph():
    modules = _modules()
    return {name: _imports(path, modules) for name, path in modules.items()}


def test_nothing_outside_cli_imports_it():
    offenders = {name: sorted(t for t in targets if t.startswith("simclr_tf.cli"))
                 for name, targets in _graph().items() if not name.startswith("simclr_tf.cli")}
    assert {n: t for n, t in offenders.items() if t} == {}


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
    assert "simclr_tf.bench_scaling" in graph["simclr_tf.bench"]  # imported inside a function
    assert "simclr_tf.config" in graph["simclr_tf.cli.flags"]
