"""The layers point one way, and a test keeps them so.

    shared, pure     agent/{catalog,kvcost,admission,errors,safetensors_info,tables,vision_tokens,vision_cost}.py,
                     agent/wire/ (agent/images.py is shared too, with Pillow: the bounded image decoder)
    engine           agent/engine/          the only runtime code that imports mlx / mlx_lm
    link             agent/link/            the agent's websocket (wire only, no engine)
    daemon           agent/daemon/          the agent on a Mac: engine + link + the Mac owner's services
    coordinator      agent/coordinator/     http → (core, flow) → routing, billing; never the engine
    cli              agent/cli/             the command line over all of them
    testing          agent/testing/         tiny models and the simulated fleet; no runtime code imports it
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "agent"
MLX_ROOTS = {"mlx", "mlx_lm"}
SHARED_PURE = ("catalog.py", "kvcost.py", "admission.py", "errors.py", "safetensors_info.py", "tables.py",
               "wire/frames.py", "wire/protocol.py", "wire/chat_body.py", "wire/unknown_fields.py",
               "wire/body_options.py", "wire/logprobs.py", "wire/tools.py", "wire/tool_deltas.py",
               "wire/response_format.py", "wire/image_parts.py", "vision_tokens.py", "vision_cost.py",
               "wire/chunk_batch.py", "wire/hot_chunks.py",
               "daemon/config.py", "engine/schedule.py")
ALSO_ALLOWED = {"wire/hot_chunks.py": {"msgspec"}}  # the relay's hot frames' decoder (DESIGN.md §2)


def imports(path: Path) -> set[str]:
    """Every module a file imports by absolute name (lazy imports inside functions included)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def files_in(package: str) -> list[Path]:
    return sorted((PACKAGE / package).rglob("*.py")) if package else sorted(PACKAGE.rglob("*.py"))


def offenders(package: str, forbidden: tuple[str, ...]) -> list[str]:
    return [f"{path.relative_to(PACKAGE)} imports {name}" for path in files_in(package)
            for name in sorted(imports(path)) if name.startswith(forbidden)]


def test_only_the_engine_and_the_test_support_import_mlx():
    found = [str(path.relative_to(PACKAGE)) for path in files_in("")
             if path.relative_to(PACKAGE).parts[0] not in ("engine", "testing")
             and {name.split(".")[0] for name in imports(path)} & MLX_ROOTS]
    assert found == []


def test_no_runtime_module_imports_the_test_support_package():
    runtime = [p for p in files_in("") if p.relative_to(PACKAGE).parts[0] != "testing"]
    found = [str(p.relative_to(PACKAGE)) for p in runtime if any(n.startswith("agent.testing") for n in imports(p))]
    assert found == []


def test_the_coordinator_never_imports_the_engine_the_link_or_the_daemon():
    assert offenders("coordinator", ("agent.engine", "agent.link", "agent.daemon", "agent.cli")) == []


def test_inside_the_coordinator_routing_and_billing_know_nothing_of_http_or_of_each_other():
    assert offenders("coordinator/routing", ("agent.coordinator.http", "agent.coordinator.billing",
                                             "agent.coordinator.core", "agent.coordinator.flow", "agent.coordinator.attempts")) == []
    assert offenders("coordinator/billing", ("agent.coordinator.http", "agent.coordinator.routing",
                                             "agent.coordinator.core", "agent.coordinator.flow", "agent.coordinator.attempts")) == []


def test_the_dialects_are_pure_translations_that_know_nothing_of_http_routing_or_billing():
    assert offenders("coordinator/dialects", ("agent.coordinator.http", "agent.coordinator.routing",
                                              "agent.coordinator.billing", "agent.coordinator.core",
                                              "agent.coordinator.attempts", "starlette")) == []


def test_the_engine_and_the_link_know_nothing_of_the_layers_above_them():
    above = ("agent.daemon", "agent.coordinator", "agent.cli", "agent.link")
    assert offenders("engine", above) == []
    assert offenders("link", ("agent.engine", "agent.daemon", "agent.coordinator", "agent.cli")) == []
    assert offenders("daemon", ("agent.coordinator", "agent.cli")) == []


def test_importing_the_package_and_its_shared_modules_loads_no_mlx():
    code = (
        "import sys, agent, agent.catalog, agent.kvcost, agent.admission, agent.wire.protocol, agent.cli.reports,"
        " agent.cli.main, agent.coordinator.http.app;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('mlx', 'mlx_lm')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_shared_pure_modules_import_only_the_standard_library_pydantic_and_each_other():
    allowed = set(sys.stdlib_module_names) | {"pydantic"}
    shared = {"agent." + name.removesuffix(".py").replace("/", ".") for name in SHARED_PURE}
    for name in SHARED_PURE:
        found = imports(PACKAGE / name)
        assert {n.split(".")[0] for n in found if not n.startswith("agent")} <= allowed | ALSO_ALLOWED.get(name, set()), name
        assert {n for n in found if n.startswith("agent")} <= shared, name
