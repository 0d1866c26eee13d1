"""Model weights on disk: pull from the Hugging Face hub into its standard cache, list, remove, verify.

The cache is huggingface_hub's own (HF_HUB_CACHE, or `cache_dir`): models--org--name/blobs/<etag>,
snapshots/<revision>/<file> -> ../../blobs/<etag>, refs/main. A pull refuses a model that can never fit
here (the agent's own load gate; `force` overrides), then runs snapshot_download with mlx-lm's file
patterns and progress bars. Offline (HF_HUB_OFFLINE=1 or `offline=True`) nothing asks the hub.
verify hashes each weight file against models.toml's manifest (`[ID.files]`: name -> {sha256, bytes}),
else the hub's LFS metadata when the hub may be asked; with neither it says so and compares the bytes
only with the cache's blob names (an LFS blob is named by its sha256): damage shows, a wrong file not.

Public names: pull_model, list_models, remove_model, verify_model, load_manifest, hub_digests,
snapshot_dir, FileDigest, FileCheck, CheckStatus, VerifyReport, CachedModel, PullResult,
ModelStoreError, ModelNotCached, ModelNeverFits, DownloadFailed, ALLOW_PATTERNS.
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from huggingface_hub import HfApi, constants, scan_cache_dir, snapshot_download
from huggingface_hub import errors as hf_errors

from agent.admission import LoadDecision, load_gate
from agent.catalog import ModelSpec
from agent.errors import DarkbloomError
from agent.hardware import HardwareInfo

# What mlx-lm itself downloads (mlx_lm.utils.DEFAULT_ALLOW_PATTERNS), so its own cache check agrees.
ALLOW_PATTERNS = ["*.json", "model*.safetensors", "*.py", "tokenizer.model", "*.tiktoken", "tiktoken.model",
                  "*.txt", "*.jsonl", "*.jinja"]
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
DigestFetcher = Callable[[str, str, list[str]], dict[str, "FileDigest"]]


class ModelStoreError(DarkbloomError):
    code = "model_store_failed"


class ModelNotCached(ModelStoreError):
    code = "model_not_cached"


class ModelNeverFits(ModelStoreError):
    code = "model_never_fits"


class DownloadFailed(ModelStoreError):
    code = "model_download_failed"


@dataclass(frozen=True, slots=True)
class FileDigest:
    sha256: str
    size_bytes: int | None = None


class CheckStatus(StrEnum):
    VERIFIED = "verified"  # the bytes hash to the reference sha256
    MISMATCH = "mismatch"  # they do not (or the size differs)
    MISSING = "missing"  # the reference or the index names it, the snapshot lacks it
    CORRUPT = "corrupt"  # no reference, and the bytes do not hash to the cache's own blob name
    UNVERIFIED = "unverified"  # no reference: intact as far as the cache can tell, nothing more


@dataclass(frozen=True, slots=True)
class FileCheck:
    name: str
    status: CheckStatus
    detail: str


@dataclass(frozen=True, slots=True)
class VerifyReport:
    repo: str
    revision: str
    path: Path
    checks: tuple[FileCheck, ...]
    notes: tuple[str, ...] = ()

    @property
    def is_verified(self) -> bool:
        return bool(self.checks) and all(check.status is CheckStatus.VERIFIED for check in self.checks)

    @property
    def is_failed(self) -> bool:
        bad = (CheckStatus.MISMATCH, CheckStatus.MISSING, CheckStatus.CORRUPT)
        return not self.checks or any(check.status in bad for check in self.checks)

    def describe(self) -> str:
        verdict = "FAILED" if self.is_failed else "verified" if self.is_verified else "NOT verified"
        return "\n".join([f"{self.repo}@{self.revision[:12]} ({self.path}): {verdict}",
                          *(f"  {check.status.value:<10} {check.name}: {check.detail}" for check in self.checks),
                          *(f"  note: {note}" for note in self.notes)])


@dataclass(frozen=True, slots=True)
class CachedModel:
    model: str
    repo: str
    revision: str
    state: str  # "complete", "partial", "missing", "damaged"
    size_bytes: int = 0
    path: Path | None = None
    detail: str = ""
    other_revisions: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class PullResult:
    path: Path
    decision: LoadDecision
    report: VerifyReport | None = None


def load_manifest(catalog_path: Path, model_id: str) -> dict[str, FileDigest]:
    """The `[ID.files]` table of models.toml: file name -> {sha256, bytes}; {} when the model has none."""
    try:
        files = tomllib.loads(catalog_path.read_text()).get(model_id, {}).get("files", {})
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ModelStoreError(f"{catalog_path}: cannot read the catalog: {exc}") from exc
    for name, entry in files.items():
        if not (isinstance(entry, dict) and set(entry) == {"sha256", "bytes"} and _SHA256.match(str(entry["sha256"]))
                and type(entry["bytes"]) is int and entry["bytes"] > 0):
            raise ModelStoreError(f"{catalog_path}: model {model_id!r}: files.{name!r} must be "
                                  '{ sha256 = "<64 lowercase hex digits>", bytes = <size> }')
    return {name: FileDigest(entry["sha256"], entry["bytes"]) for name, entry in files.items()}


def snapshot_dir(repo: str, revision: str, cache_dir: Path | None = None) -> Path:
    """Where a commit's files are (catalog revisions are commit hashes; branch names are not resolved)."""
    return cache_root(cache_dir) / f"models--{repo.replace('/', '--')}" / "snapshots" / revision


def pull_model(
    spec: ModelSpec, *, hardware: HardwareInfo, force: bool = False, operator_reserve_bytes: int = 0,
    cache_dir: Path | None = None, offline: bool | None = None, verify: bool = True,
    manifest: Mapping[str, FileDigest] | None = None, download: Callable[..., Any] = snapshot_download,
    fetch_digests: DigestFetcher | None = None,
) -> PullResult:
    # Could it ever load here, with nothing else loaded? The very gate the agent loads with.
    decision = load_gate(spec, total_memory_bytes=hardware.memory_bytes, operator_reserve_bytes=operator_reserve_bytes,
                         metal_limit_bytes=hardware.metal_working_set_bytes)
    if not decision.fits and not force:
        raise ModelNeverFits(f"{spec.id} can never run on this machine: {decision.reason}; "
                             "pass --force to download it anyway")
    if not spec.repo or not spec.revision:
        raise ModelStoreError(f"{spec.id} has no hub repo and revision in {spec.source or 'the catalog'}")
    offline = constants.HF_HUB_OFFLINE if offline is None else offline
    try:
        path = Path(download(spec.repo, revision=spec.revision, allow_patterns=ALLOW_PATTERNS,
                             cache_dir=cache_dir, local_files_only=offline))
    except hf_errors.LocalEntryNotFoundError as exc:
        if offline:
            raise ModelNotCached(f"{spec.id} ({spec.repo}@{spec.revision[:12]}) is not in the cache at "
                                 f"{cache_root(cache_dir)} and the hub is off (HF_HUB_OFFLINE); go online "
                                 "or copy a cache that has it") from exc
        said = str(exc).splitlines()[0]  # huggingface_hub adds a paragraph of advice after the cause
        raise DownloadFailed(f"cannot reach the Hugging Face hub to pull {spec.id} ({said}); try again") from exc
    except (hf_errors.RepositoryNotFoundError, hf_errors.RevisionNotFoundError) as exc:
        raise ModelStoreError(f"{spec.repo}@{spec.revision} ({spec.id}) is not on the hub: check the catalog, "
                              f"or set HF_TOKEN for a gated repo ({exc})") from exc
    except hf_errors.HfHubHTTPError as exc:
        raise DownloadFailed(f"the hub refused the download of {spec.id}: {exc}; try again later") from exc
    except OSError as exc:
        raise ModelStoreError(f"cannot write {spec.id} into {cache_root(cache_dir)}: {exc}") from exc
    report = verify_model(spec.repo, spec.revision, cache_dir=cache_dir, offline=offline, manifest=manifest,
                          fetch_digests=fetch_digests) if verify else None
    return PullResult(path, decision, report)


def verify_model(
    repo: str, revision: str, *, manifest: Mapping[str, FileDigest] | None = None, cache_dir: Path | None = None,
    offline: bool | None = None, fetch_digests: DigestFetcher | None = None,
    on_check: Callable[[FileCheck], None] | None = None,
) -> VerifyReport:
    snapshot = snapshot_dir(repo, revision, cache_dir)
    if not snapshot.is_dir():
        raise ModelNotCached(f"{repo}@{revision[:12]} is not in the cache ({snapshot}); pull it first")
    references = dict(manifest or {})  # the catalog's manifest is trusted over the hub
    names = sorted(set(references) | _weight_files(snapshot) | _indexed_shards(snapshot))
    notes = ["reference: the models.toml manifest"] if references else []
    unreferenced = [name for name in names if name not in references]
    if unreferenced and (constants.HF_HUB_OFFLINE if offline is None else offline):
        notes.append(f"offline: the hub was not asked about {len(unreferenced)} file(s) without a manifest entry")
    elif unreferenced:
        try:
            references |= (fetch_digests or hub_digests)(repo, revision, unreferenced)
            notes.append("reference: the hub's LFS metadata")
        except Exception as exc:  # any network or hub failure leaves those files unverified, and says so
            notes.append(f"could not ask the hub for reference hashes: {type(exc).__name__}: {exc}")
    if any(name not in references for name in names):
        notes.append("some files have no reference sha256 (not in a models.toml manifest, not from the hub): "
                     "they were only compared with the cache's blob names, which catches damage, not a wrong file")
    checks = []
    for name in names:
        checks.append(_check_file(snapshot / name, name, references.get(name)))
        if on_check:
            on_check(checks[-1])
    return VerifyReport(repo, revision, snapshot, tuple(checks), tuple(notes))


def hub_digests(repo: str, revision: str, paths: list[str], *, api: Any = None) -> dict[str, FileDigest]:
    """sha256 and size of each LFS file among `paths` at `revision`, from the hub's paths-info."""
    infos = (api or HfApi()).get_paths_info(repo, paths, revision=revision)
    return {info.path: FileDigest(info.lfs.sha256, info.lfs.size) for info in infos
            if getattr(info, "lfs", None) is not None}


def list_models(catalog: Mapping[str, ModelSpec], *, cache_dir: Path | None = None) -> list[CachedModel]:
    info, repos = _scan(cache_dir)
    warnings = [str(warning) for warning in info.warnings] if info else []
    return [_cached_model(model_id, spec.repo, spec.revision, repos.get(spec.repo), warnings)
            for model_id, spec in sorted(catalog.items()) if spec.repo and spec.revision]


def _cached_model(model_id: str, repo_id: str, revision: str, repo: Any, warnings: list[str]) -> CachedModel:
    damage = [warning for warning in warnings if f"models--{repo_id.replace('/', '--')}" in warning]
    if damage:  # scan_cache_dir skips a repo with a broken symlink, and says why here
        return CachedModel(model_id, repo_id, revision, "damaged", detail=damage[0])
    revisions = {rev.commit_hash: rev for rev in repo.revisions} if repo else {}
    others = tuple(sorted(set(revisions) - {revision}))
    if revision not in revisions:
        return CachedModel(model_id, repo_id, revision, "missing", other_revisions=others)
    snapshot = revisions[revision].snapshot_path
    missing = _missing_files(snapshot)
    detail = f"missing {', '.join(missing)}" if missing else ""
    return CachedModel(model_id, repo_id, revision, "partial" if missing else "complete",
                       revisions[revision].size_on_disk, snapshot, detail, others)


def remove_model(spec: ModelSpec, *, cache_dir: Path | None = None, all_revisions: bool = False) -> int:
    """Delete the pinned revision (or every cached revision) of `spec`; the bytes freed, 0 if none was there."""
    info, repos = _scan(cache_dir)
    repo = repos.get(spec.repo or "")
    hashes = [rev.commit_hash for rev in repo.revisions if all_revisions or rev.commit_hash == spec.revision] \
        if repo else []
    if not hashes:
        return 0
    strategy = info.delete_revisions(*hashes)
    strategy.execute()
    return strategy.expected_freed_size


def _check_file(path: Path, name: str, reference: FileDigest | None) -> FileCheck:
    if not path.is_file():
        return FileCheck(name, CheckStatus.MISSING, "not in the snapshot (or its blob is gone)")
    size = path.stat().st_size
    if reference and reference.size_bytes is not None and size != reference.size_bytes:
        return FileCheck(name, CheckStatus.MISMATCH, f"{size:,} bytes, expected {reference.size_bytes:,}")
    with path.open("rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
    if reference:
        ok = digest == reference.sha256
        return FileCheck(name, CheckStatus.VERIFIED if ok else CheckStatus.MISMATCH,
                         f"sha256 {digest}" + ("" if ok else f", expected {reference.sha256}"))
    blob = path.readlink().name if path.is_symlink() else ""
    if _SHA256.match(blob) and blob != digest:
        return FileCheck(name, CheckStatus.CORRUPT, f"sha256 {digest}, but the cache stored it as {blob}")
    return FileCheck(name, CheckStatus.UNVERIFIED, f"sha256 {digest}, no reference to compare with")


def _weight_files(snapshot: Path) -> set[str]:
    return {path.relative_to(snapshot).as_posix() for path in snapshot.rglob("*.safetensors")}


def _indexed_shards(snapshot: Path) -> set[str]:
    index = snapshot / "model.safetensors.index.json"
    try:
        return set(json.loads(index.read_text())["weight_map"].values()) if index.is_file() else set()
    except (OSError, ValueError, KeyError, AttributeError):
        return set()


def _missing_files(snapshot: Path) -> list[str]:
    needed = {"config.json"} | (_indexed_shards(snapshot) or _weight_files(snapshot) or {"model.safetensors"})
    return sorted(name for name in needed if not (snapshot / name).is_file())


def _scan(cache_dir: Path | None) -> tuple[Any, dict[str, Any]]:
    """huggingface_hub's scan of the cache, and its model repos by id; (None, {}) without a cache."""
    try:
        info = scan_cache_dir(cache_root(cache_dir))
    except hf_errors.CacheNotFound:
        return None, {}
    return info, {repo.repo_id: repo for repo in info.repos if repo.repo_type == "model"}


def cache_root(cache_dir: Path | None) -> Path:
    return Path(cache_dir).expanduser() if cache_dir else Path(constants.HF_HUB_CACHE)
