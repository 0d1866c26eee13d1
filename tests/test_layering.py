"""The layers point one way: nothing outside agent/engine imports mlx, and `import agent` stays light."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "agent"
MLX_ROOTS = {"mlx", "mlx_lm"}


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_only_the_engine_package_imports_mlx():
    offenders = [
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if "engine" not in path.relative_to(PACKAGE).parts and imported_roots(path) & MLX_ROOTS
    ]
    assert offenders == []


def test_importing_the_package_and_its_shared_modules_loads_no_mlx():
    code = (
        "import sys, agent, agent.catalog, agent.kvcost, agent.admission, agent.reports, agent.cli;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('mlx', 'mlx_lm')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_shared_pure_modules_import_only_the_standard_library_pydantic_and_each_other():
    allowed = set(sys.stdlib_module_names) | {"pydantic", "agent"}
    for name in ("catalog", "kvcost", "admission", "errors", "safetensors_info", "tables", "protocol", "frames",
                 "unknown_fields",
                 "chat_request", "config"):
        assert imported_roots(PACKAGE / f"{name}.py") <= allowed, name
