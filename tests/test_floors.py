"""The package's floors: every import goes down (or stays within its own area).

    base        ops, fileio, images, metrics, the package's __init__
    layers  ->  entropy  ->  models  ->  coding  ->  model_file  ->  zoo  ->  codec
    apps        training, evaluation, convert, export_xla, torch_models
    tools       experiment  ->  configs (the presets)  ->  config_files  ->  summary, demo, cli_paths
    cli         cli_models (the model commands), cli_coding (the coding commands)  ->  cli

An area may import any area on a lower floor and itself; areas on one floor do not import each
other (so training never imports evaluation), except the pairs in ``PEERS``. Imports inside
functions count as much as those at the top: they are found by walking the whole syntax tree.
"""

from __future__ import annotations

import ast
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "mracnn_jax"
FLOORS = [
    {"__init__", "ops", "fileio", "images", "metrics", "compilation_cache"},
    {"layers"},
    {"entropy"},
    {"models"},
    {"coding"},
    {"model_file"},
    {"zoo"},
    {"codec"},
    {"training", "evaluation", "convert", "export_xla", "torch_models"},
    {"experiment"},
    {"configs"},
    {"config_files"},
    {"summary", "demo", "cli_paths"},
    {"cli_models", "cli_coding"},
    {"cli"},
]
PEERS = {("torch_models", "convert")}  # the twin loads weights through convert's key mapping


def _area(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(package: pathlib.Path) -> list[tuple[str, str, str, int]]:
    """(file, importing area, imported area, line) for every import of the package by itself;
    ``from mracnn_jax import x`` names area ``x`` when x is a module, else the ``__init__``."""
    out = []
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(package.parent).with_suffix("")
        area = _area(".".join(rel.parts))
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                if node.module == "mracnn_jax":
                    names = [
                        f"mracnn_jax.{a.name}"
                        if (package / f"{a.name}.py").exists() or (package / a.name).is_dir()
                        else "mracnn_jax"
                        for a in node.names
                    ]
                elif node.module.startswith("mracnn_jax."):
                    names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names if a.name.startswith("mracnn_jax")]
            out += [(f"{rel}", area, _area(n), node.lineno) for n in names]
    return out


def _wrong(imports) -> list[str]:
    floor = {a: i for i, f in enumerate(FLOORS) for a in f}
    return [
        f"{path}:{line} ({src} -> {dst})"
        for path, src, dst, line in imports
        if src != dst and (src, dst) not in PEERS and floor.get(dst, 99) >= floor.get(src, -1)
    ]


def test_every_area_has_a_floor():
    floor_of = {a for floor in FLOORS for a in floor}
    areas = {_area(".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts))
             for p in PACKAGE.rglob("*.py")}  # fmt: skip
    assert areas <= floor_of, f"place these in FLOORS: {sorted(areas - floor_of)}"


def test_imports_go_down():
    wrong = _wrong(_imports(PACKAGE))
    assert not wrong, "imports above or beside their floor: " + "; ".join(wrong)


def test_the_check_can_fail(tmp_path):
    """Upward and sideways imports are found, also inside functions."""
    package = tmp_path / "mracnn_jax"
    (package / "layers").mkdir(parents=True)
    (package / "codec").mkdir()
    (package / "training").mkdir()
    (package / "layers" / "conv.py").write_text(
        "def f():\n    from mracnn_jax.codec import tiles\n"
    )
    (package / "training" / "losses.py").write_text("from mracnn_jax import evaluation, fileio\n")
    (package / "evaluation.py").write_text("")
    (package / "fileio.py").write_text("")
    wrong = _wrong(_imports(package))
    assert wrong == ["mracnn_jax/layers/conv:2 (layers -> codec)",
                     "mracnn_jax/training/losses:1 (training -> evaluation)"], wrong  # fmt: skip
