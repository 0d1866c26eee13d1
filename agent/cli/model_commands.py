"""`darkbloom-agent models ...`: model weights in the Hugging Face cache."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Optional

import typer

from agent.cli.support import fail as _fail
from agent.errors import DarkbloomError, UnknownModel

models_app = typer.Typer(no_args_is_help=True, help="Model weights in the Hugging Face cache.")
CatalogOpt = Annotated[Optional[Path], typer.Option(help="A models.toml other than the bundled one.")]
CacheOpt = Annotated[Optional[Path], typer.Option(help="A Hugging Face hub cache other than HF_HUB_CACHE's.")]
OfflineOpt = Annotated[Optional[bool], typer.Option("--offline/--online", help="Never ask the hub "
                                                    "(default: HF_HUB_OFFLINE).", show_default=False)]
ModelArg = Annotated[str, typer.Argument(help="A catalog id (see `models list`).")]


def _spec_and_manifest(model: str, catalog: Optional[Path]):
    from agent.catalog import default_catalog_path, load_catalog
    from agent.daemon.model_store import load_manifest

    specs = load_catalog(catalog)
    if model not in specs:
        raise UnknownModel(f"unknown model {model!r}: not a catalog id ({', '.join(sorted(specs)) or 'none'})")
    return specs[model], load_manifest(catalog or default_catalog_path(), model)


@models_app.command("list")
def models_list(catalog: CatalogOpt = None, cache_dir: CacheOpt = None,
                as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Each catalog model's pinned revision in the cache: complete, partial, missing or damaged."""
    from agent.catalog import load_catalog
    from agent.daemon.model_store import list_models
    from agent.tables import human_bytes

    try:
        entries = list_models(load_catalog(catalog), cache_dir=cache_dir)
    except DarkbloomError as error:
        _fail(error)
    if as_json:
        typer.echo(json.dumps([asdict(entry) for entry in entries], default=str, indent=2))
        return
    for e in entries:
        others = f"; {len(e.other_revisions)} other revision(s) cached" if e.other_revisions else ""
        size = human_bytes(e.size_bytes) if e.size_bytes else "-"
        typer.echo(f"{e.model:<14} {e.state:<9} {size:>10}  {e.repo}@{e.revision[:12]} {e.detail}{others}")


@models_app.command("pull")
def models_pull(model: ModelArg, force: Annotated[bool, typer.Option(help="Download even if it can never fit here.")] = False,
                verify: Annotated[bool, typer.Option(help="Hash the weights after the download.")] = True,
                reserve_gb: Annotated[float, typer.Option(min=0, help="Memory the operator keeps for other work (GiB).")] = 0.0,
                catalog: CatalogOpt = None, cache_dir: CacheOpt = None, offline: OfflineOpt = None) -> None:
    """Download MODEL's pinned revision into the Hugging Face cache, after checking it can ever fit here."""
    from agent.admission import GIB
    from agent.daemon.model_store import pull_model
    from agent.hardware import probe_hardware

    try:
        spec, manifest = _spec_and_manifest(model, catalog)
        result = pull_model(spec, hardware=probe_hardware(), force=force, operator_reserve_bytes=int(reserve_gb * GIB),
                            cache_dir=cache_dir, offline=offline, verify=verify, manifest=manifest)
    except DarkbloomError as error:
        _fail(error)
    if not result.decision.fits:
        typer.echo(f"warning: pulled with --force; {result.decision.reason}", err=True)
    typer.echo(f"{model}: {result.path}")
    if result.report:
        typer.echo(result.report.describe())
        if result.report.is_failed:
            raise typer.Exit(code=1)


@models_app.command("rm")
def models_rm(model: ModelArg, all_revisions: Annotated[bool, typer.Option(help="Also remove other cached revisions.")] = False,
              catalog: CatalogOpt = None, cache_dir: CacheOpt = None) -> None:
    """Delete MODEL's pinned revision (or every revision) from the Hugging Face cache."""
    from agent.daemon.model_store import remove_model
    from agent.tables import human_bytes

    try:
        spec, _ = _spec_and_manifest(model, catalog)
        freed = remove_model(spec, cache_dir=cache_dir, all_revisions=all_revisions)
    except DarkbloomError as error:
        _fail(error)
    typer.echo(f"{model}: freed {human_bytes(freed)}" if freed else f"{model}: not in the cache, nothing removed")


@models_app.command("verify")
def models_verify(model: ModelArg, strict: Annotated[bool, typer.Option(help="Fail (exit 3) unless every file "
                                                                        "matched a reference sha256.")] = False,
                  catalog: CatalogOpt = None, cache_dir: CacheOpt = None, offline: OfflineOpt = None) -> None:
    """sha256 of every weight file of MODEL against models.toml's manifest, else the hub's metadata."""
    from agent.daemon.model_store import verify_model

    try:
        spec, manifest = _spec_and_manifest(model, catalog)
        report = verify_model(spec.repo, spec.revision, manifest=manifest, cache_dir=cache_dir, offline=offline)
    except DarkbloomError as error:
        _fail(error)
    typer.echo(report.describe())
    if report.is_failed:
        raise typer.Exit(code=1)
    if strict and not report.is_verified:
        raise typer.Exit(code=3)
