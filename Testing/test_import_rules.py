"""The library's layout rules, read from the code's own imports (ast, nothing imported):

* each package imports only the packages its docstring's "May import:" line names;
* what users run (fuse, classify, evaluate, demo, the worker, the Slicer module) never
  imports training code: only the training commands reach ``training``, inside the
  functions that run them;
* the library never imports Slicer, Qt or VTK, and the Slicer module never imports the
  command line, nor (through the library) torch;
* no import cycles; no library file over 400 lines, the module file at most 500.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = ROOT / "ClinicalFMambaLib"
MODULE_FOLDER = ROOT / "ClinicalFMamba"
PACKAGE = LIBRARY.name
TRAINING_ENTRY = f"{PACKAGE}.cli.train_commands"
SLICER_NAMES = ("slicer", "qt", "vtk", "ctk", "mrml", "SampleData")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_of(module: str) -> str | None:
    """The library's top-level package holding ``module`` ('fusion', 'cli', ...)."""
    parts = module.split(".")
    return parts[1] if parts[0] == PACKAGE and len(parts) > 1 else None


def is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def imports(path: Path) -> list[tuple[str, bool]]:
    """(imported module, at module level?) for every import in ``path``; relative imports
    resolved, ``from X import name`` counted as X.name where that is a module."""
    this = module_name(path)
    package = this if path.name == "__init__.py" else this.rpartition(".")[0]
    found = []

    def visit(node: ast.AST, top: bool) -> None:
        if is_type_checking(node):
            return
        if isinstance(node, ast.Import):
            found.extend((alias.name, top) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module
            found.append((source, top))
            found.extend((f"{source}.{alias.name}", top) for alias in node.names)
        for child in ast.iter_child_nodes(node):
            inside = top and not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                    ast.Lambda))
            visit(child, inside)

    visit(ast.parse(path.read_text(encoding="utf-8")), True)
    return found


LIBRARY_FILES = sorted(p for p in LIBRARY.rglob("*.py") if "__pycache__" not in p.parts)
MODULES = {module_name(p): p for p in LIBRARY_FILES}
IMPORTS = {name: [(m, top) for m, top in imports(path) if m in MODULES or m == "torch"
                  or m.split(".")[0] in SLICER_NAMES]
           for name, path in MODULES.items()}
ALL_IMPORTS = {name: imports(path) for name, path in MODULES.items()}


def allowed_packages() -> dict[str, set[str]]:
    """Each package's "May import:" line: the packages named in it as ``name``."""
    allowed = {}
    for name, path in MODULES.items():
        if path.name == "__init__.py" and name.count(".") == 1:
            doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
            line = re.search(r"May import:(.*?)(?:\n\n|$)", doc, re.S)
            assert line, f"{path.relative_to(ROOT)}: its docstring has no 'May import:' line"
            text = line.group(1)
            named = set(re.findall(r"``(\w+)``", text))
            allowed[package_of(name)] = (set(MODULES_PACKAGES) - {package_of(name)}
                                         if text.strip().startswith("any package") else named)
            allowed[package_of(name)] -= set(re.findall(r"but ``(\w+)``(?: and ``(\w+)``)?",
                                                        text)[0]) if "but" in text else set()
    return allowed


MODULES_PACKAGES = sorted({package_of(m) for m in MODULES if package_of(m)})


def test_every_package_imports_only_what_its_docstring_allows():
    allowed = allowed_packages()
    assert set(allowed) == set(MODULES_PACKAGES), "every package says what it may import"
    wrong = []
    for name, found in IMPORTS.items():
        mine = package_of(name)
        for target, top in found:
            theirs = package_of(target)
            if theirs and theirs != mine and theirs not in allowed[mine]:
                if not (name == TRAINING_ENTRY and theirs == "training"):
                    wrong.append(f"{name} imports {target}")
    assert wrong == []


def test_only_the_training_commands_reach_training_and_only_when_they_run():
    reaching = sorted(f"{name} ({'module level' if top else 'in a function'}) -> {target}"
                      for name, found in IMPORTS.items() if package_of(name) != "training"
                      for target, top in found if package_of(target) == "training"
                      if name != TRAINING_ENTRY or top)
    assert reaching == []


def test_no_import_cycles():
    graph = {name: {m for m, top in found if top and m in MODULES and m != name}
             for name, found in IMPORTS.items()}
    # a package's __init__ is imported with each of its modules: not an edge of a cycle
    graph = {name: {m for m in deps if not name.startswith(m + ".")}
             for name, deps in graph.items()}
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for dep in sorted(graph[name]):
            if state.get(dep) == 1:
                cycles.append(path[path.index(dep):] + [dep])
            elif dep not in state:
                visit(dep, path + [dep])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert cycles == []


def test_the_library_imports_no_slicer_qt_or_vtk():
    found = sorted(f"{name} imports {m}" for name, all_found in ALL_IMPORTS.items()
                   for m, _ in all_found if m.split(".")[0] in SLICER_NAMES)
    assert found == []


def closure(start: set[str]) -> set[str]:
    """Library modules reached from ``start`` through imports at module level."""
    seen, todo = set(), list(start)
    while todo:
        name = todo.pop()
        if name in seen or name not in IMPORTS:
            continue
        seen.add(name)
        todo += [m for m, top in IMPORTS[name] if top]
        todo += [m for m in MODULES if name.startswith(m + ".")]  # its packages' __init__
    return seen


def test_the_slicer_module_imports_no_command_line_and_no_torch():
    files = [p for p in MODULE_FOLDER.rglob("*.py") if "__pycache__" not in p.parts]
    used = {m for path in files for m, _ in imports(path) if m in MODULES}
    assert used, "the module uses the library"
    assert sorted(m for m in used if package_of(m) in ("cli", "training")) == []
    torch_users = sorted(m for m in closure(used) if ("torch", True) in IMPORTS.get(m, []))
    assert torch_users == [], "modules the Slicer module imports must not load torch"


def test_no_library_file_over_400_lines_and_the_module_file_at_most_500():
    long = {str(p.relative_to(ROOT)): n for p in LIBRARY_FILES
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > 400}
    assert long == {}
    module_lines = len((MODULE_FOLDER / "ClinicalFMamba.py").read_text(
        encoding="utf-8").splitlines())
    assert module_lines <= 500


def test_fusing_and_classifying_load_no_training_code(tmp_path):
    """The rule at run time: a fuse with --classify in a fresh interpreter."""
    sample = ROOT / "Resources" / "sample"
    code = (
        "import sys\n"
        "from ClinicalFMambaLib.cli.main import main\n"
        f"code = main(['fuse', {str(sample / 'mri_ct_MRI.png')!r}, "
        f"{str(sample / 'mri_ct_CT.png')!r}, '-o', {str(tmp_path / 'f.png')!r}, '--classify'])\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('ClinicalFMambaLib.training'))\n"
        "print(code, loaded)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert out.stdout.strip().splitlines()[-1] == "0 []", out.stderr[-2000:]
