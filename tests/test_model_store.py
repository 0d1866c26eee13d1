from __future__ import annotations

import fnmatch
import hashlib
import json
import os
from pathlib import Path

import pytest
from huggingface_hub import scan_cache_dir, snapshot_download, try_to_load_from_cache
from huggingface_hub.errors import LocalEntryNotFoundError
from huggingface_hub.hf_api import RepoFile

from agent.admission import GIB
from agent.catalog import load_catalog
from agent.daemon.model_store import (
    ALLOW_PATTERNS,
    CheckStatus,
    DownloadFailed,
    FileDigest,
    ModelNeverFits,
    ModelNotCached,
    ModelStoreError,
    hub_digests,
    list_models,
    load_manifest,
    pull_model,
    remove_model,
    snapshot_dir,
    verify_model,
)
from agent.errors import is_retryable
from agent.hardware import HardwareInfo

FIXTURES = Path(__file__).parent / "fixtures" / "model_store"
CATALOG = load_catalog()
SPEC, REPO, REVISION = CATALOG["gpt-oss-20b"], CATALOG["gpt-oss-20b"].repo, CATALOG["gpt-oss-20b"].revision
SHARDS = {f"model-0000{i}-of-00003.safetensors": f"tiny shard {i} ".encode() * (100 * i) for i in (1, 2, 3)}
INDEX = {"metadata": {"total_size": 1}, "weight_map": {f"layer.{i}": name for i, name in enumerate(SHARDS)}}
FILES = {"config.json": b'{"model_type": "gpt_oss"}', "model.safetensors.index.json": json.dumps(INDEX).encode(),
         "README.md": b"# not a pattern mlx-lm downloads\n", ".gitattributes": b"*.safetensors filter=lfs\n", **SHARDS}
MANIFEST = {name: FileDigest(hashlib.sha256(data).hexdigest(), len(data)) for name, data in SHARDS.items()}
BIG_MAC, SMALL_MAC = (HardwareInfo(system="darwin", memory_bytes=gib * GIB) for gib in (64, 16))


def etag(name: str, data: bytes) -> str:
    """huggingface_hub names an LFS blob by its sha256 and any other blob by its git object id."""
    if name.endswith(".safetensors"):
        return hashlib.sha256(data).hexdigest()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def write_cache(cache: Path, repo: str, revision: str, files: dict[str, bytes], ref: str | None = "main") -> Path:
    """Files laid out exactly as huggingface_hub lays them out: blobs, relative symlinks, refs."""
    repo_dir = cache / f"models--{repo.replace('/', '--')}"
    snapshot = repo_dir / "snapshots" / revision
    for name, data in files.items():
        blob = repo_dir / "blobs" / etag(name, data)
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.unlink(missing_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    if ref:
        (repo_dir / "refs").mkdir(exist_ok=True)
        (repo_dir / "refs" / ref).write_text(revision)
    return snapshot


class FakeHub:
    """snapshot_download against a hub that holds `files`; offline calls go to the real one, cache only."""

    def __init__(self, files: dict[str, bytes], *, reachable: bool = True) -> None:
        self.files, self.reachable, self.calls = files, reachable, []

    def __call__(self, repo_id: str, **kwargs) -> str:
        self.calls.append({"repo_id": repo_id, **kwargs})
        if kwargs["local_files_only"]:
            return snapshot_download(repo_id, **kwargs)
        if not self.reachable:
            raise LocalEntryNotFoundError("An error happened while trying to locate the files on the Hub")
        wanted = {name: data for name, data in self.files.items()
                  if any(fnmatch.fnmatch(name, pattern) for pattern in kwargs["allow_patterns"])}
        return str(write_cache(kwargs["cache_dir"], repo_id, kwargs["revision"], wanted))


class FakeDigests:
    def __init__(self, digests: dict[str, FileDigest] | None = None, error: Exception | None = None) -> None:
        self.digests, self.error, self.asked = digests or {}, error, []

    def __call__(self, repo: str, revision: str, paths: list[str]) -> dict[str, FileDigest]:
        self.asked.append(paths)
        if self.error:
            raise self.error
        return {path: self.digests[path] for path in paths if path in self.digests}


def test_the_fake_cache_is_one_that_huggingface_hub_itself_reads_without_complaint(tmp_path):
    write_cache(tmp_path, REPO, REVISION, FILES)
    info = scan_cache_dir(tmp_path)
    assert info.warnings == [] and [repo.repo_id for repo in info.repos] == [REPO]
    assert next(iter(info.repos)).refs["main"].commit_hash == REVISION
    assert try_to_load_from_cache(REPO, "config.json", cache_dir=tmp_path, revision=REVISION) == \
        str(snapshot_dir(REPO, REVISION, tmp_path) / "config.json")


def test_pull_refuses_a_model_that_can_never_fit_this_mac_and_says_why(tmp_path):
    hub = FakeHub(FILES)
    with pytest.raises(ModelNeverFits, match=r"gpt-oss-20b can never run on this machine: needs .* cap is .*--force"):
        pull_model(SPEC, hardware=SMALL_MAC, cache_dir=tmp_path, download=hub, offline=False)
    assert hub.calls == []


def test_force_pulls_a_model_that_would_never_fit_and_keeps_the_gates_verdict(tmp_path):
    result = pull_model(SPEC, hardware=SMALL_MAC, force=True, cache_dir=tmp_path, download=FakeHub(FILES),
                        offline=False, manifest=MANIFEST)
    assert not result.decision.fits and result.report.is_verified


def test_pull_fetches_the_pinned_revision_with_mlx_lms_patterns_and_verifies_against_the_manifest(tmp_path):
    hub, digests = FakeHub(FILES), FakeDigests()
    result = pull_model(SPEC, hardware=BIG_MAC, cache_dir=tmp_path, download=hub, offline=False,
                        manifest=MANIFEST, fetch_digests=digests)
    assert hub.calls == [{"repo_id": REPO, "revision": REVISION, "allow_patterns": ALLOW_PATTERNS,
                          "cache_dir": tmp_path, "local_files_only": False}]
    assert result.path == snapshot_dir(REPO, REVISION, tmp_path)
    assert sorted(p.name for p in result.path.iterdir()) == sorted(set(FILES) - {"README.md", ".gitattributes"})
    assert result.decision.fits and result.report.is_verified and digests.asked == []
    assert [check.status for check in result.report.checks] == [CheckStatus.VERIFIED] * 3


def test_offline_pull_of_a_cached_model_is_answered_by_huggingface_hub_from_the_cache_alone(tmp_path):
    write_cache(tmp_path, REPO, REVISION, FILES)
    hub = FakeHub({}, reachable=False)
    result = pull_model(SPEC, hardware=BIG_MAC, cache_dir=tmp_path, download=hub, offline=True, manifest=MANIFEST)
    assert hub.calls[0]["local_files_only"] is True
    assert result.path == snapshot_dir(REPO, REVISION, tmp_path) and result.report.is_verified


def test_offline_pull_or_verify_of_a_model_not_in_the_cache_says_so_and_how_to_fix_it(tmp_path):
    with pytest.raises(ModelNotCached, match="not in the cache .* the hub is off") as raised:
        pull_model(SPEC, hardware=BIG_MAC, cache_dir=tmp_path, download=FakeHub({}), offline=True)
    assert raised.value.code == "model_not_cached"
    with pytest.raises(ModelNotCached, match="pull it first"):
        verify_model(REPO, REVISION, cache_dir=tmp_path, offline=True)


def test_an_unreachable_hub_is_a_download_failure_worth_retrying(tmp_path):
    with pytest.raises(DownloadFailed, match="cannot reach the Hugging Face hub") as raised:
        pull_model(SPEC, hardware=BIG_MAC, cache_dir=tmp_path, download=FakeHub(FILES, reachable=False),
                   offline=False)
    assert is_retryable(raised.value)


def test_verify_hashes_the_bytes_so_a_swapped_blob_fails_against_the_manifest(tmp_path):
    snapshot = write_cache(tmp_path, REPO, REVISION, FILES)
    shard = "model-00002-of-00003.safetensors"
    (snapshot / shard).resolve().write_bytes(b"X" * len(SHARDS[shard]))  # same size, same blob name
    report = verify_model(REPO, REVISION, manifest=MANIFEST, cache_dir=tmp_path, offline=True)
    statuses = {check.name: check.status for check in report.checks}
    assert statuses[shard] is CheckStatus.MISMATCH and report.is_failed and not report.is_verified
    assert "expected " + MANIFEST[shard].sha256 in next(c.detail for c in report.checks if c.name == shard)


def test_a_file_of_the_wrong_size_fails_without_being_hashed(tmp_path):
    write_cache(tmp_path, REPO, REVISION, FILES)
    manifest = MANIFEST | {"model-00001-of-00003.safetensors": FileDigest("0" * 64, 1)}
    report = verify_model(REPO, REVISION, manifest=manifest, cache_dir=tmp_path, offline=True)
    assert report.checks[0].status is CheckStatus.MISMATCH and report.checks[0].detail == "1,300 bytes, expected 1"


def test_a_shard_named_by_the_index_but_absent_or_dangling_is_missing(tmp_path):
    snapshot = write_cache(tmp_path, REPO, REVISION, FILES)
    (snapshot / "model-00003-of-00003.safetensors").unlink()
    (snapshot / "model-00001-of-00003.safetensors").resolve().unlink()  # the blob, leaving a broken symlink
    report = verify_model(REPO, REVISION, cache_dir=tmp_path, offline=True)
    statuses = [check.status for check in report.checks]
    assert statuses == [CheckStatus.MISSING, CheckStatus.UNVERIFIED, CheckStatus.MISSING] and report.is_failed


def test_offline_without_a_manifest_verify_says_plainly_that_nothing_was_verified(tmp_path):
    write_cache(tmp_path, REPO, REVISION, FILES)
    digests = FakeDigests(MANIFEST)
    report = verify_model(REPO, REVISION, cache_dir=tmp_path, offline=True, fetch_digests=digests)
    assert digests.asked == [] and not report.is_verified and not report.is_failed
    assert {check.status for check in report.checks} == {CheckStatus.UNVERIFIED}
    assert any("offline" in note for note in report.notes)
    assert any("no reference sha256" in note and "not a wrong file" in note for note in report.notes)
    assert "NOT verified" in report.describe()


def test_without_a_reference_a_blob_whose_bytes_disagree_with_its_sha256_name_is_corrupt(tmp_path):
    snapshot = write_cache(tmp_path, REPO, REVISION, FILES)
    (snapshot / "model-00003-of-00003.safetensors").resolve().write_bytes(b"bit rot")
    report = verify_model(REPO, REVISION, cache_dir=tmp_path, offline=True)
    assert report.checks[2].status is CheckStatus.CORRUPT and report.is_failed


def test_online_without_a_manifest_verify_asks_the_hub_for_the_lfs_sha256_of_each_weight_file(tmp_path):
    write_cache(tmp_path, REPO, REVISION, FILES)
    digests = FakeDigests(MANIFEST)
    checked = []
    report = verify_model(REPO, REVISION, cache_dir=tmp_path, offline=False, fetch_digests=digests,
                          on_check=checked.append)
    assert digests.asked == [sorted(SHARDS)] and report.is_verified and checked == list(report.checks)
    assert "reference: the hub's LFS metadata" in report.notes


def test_a_manifest_entry_is_trusted_and_the_hub_is_asked_only_about_the_rest(tmp_path):
    write_cache(tmp_path, REPO, REVISION, FILES)
    digests = FakeDigests(MANIFEST)
    first = "model-00001-of-00003.safetensors"
    report = verify_model(REPO, REVISION, manifest={first: MANIFEST[first]}, cache_dir=tmp_path, offline=False,
                          fetch_digests=digests)
    assert digests.asked == [sorted(set(SHARDS) - {first})] and report.is_verified


def test_an_unreachable_hub_leaves_files_unverified_and_says_why(tmp_path):
    write_cache(tmp_path, REPO, REVISION, FILES)
    report = verify_model(REPO, REVISION, cache_dir=tmp_path, offline=False,
                          fetch_digests=FakeDigests(error=ConnectionError("no route to host")))
    assert not report.is_verified and not report.is_failed
    assert "could not ask the hub for reference hashes: ConnectionError: no route to host" in report.notes


class FakeHfApi:
    def __init__(self, entries: list[dict]) -> None:
        self.entries, self.asked = entries, []

    def get_paths_info(self, repo_id: str, paths: list[str], *, revision: str) -> list[RepoFile]:
        self.asked.append((repo_id, tuple(paths), revision))
        return [RepoFile(**entry) for entry in self.entries if entry["path"] in paths]


def test_hub_digests_reads_the_lfs_sha256_and_size_from_paths_info_and_skips_plain_git_files():
    entries = json.loads((FIXTURES / "gpt-oss-20b.paths_info.json").read_text())
    entries.append({"type": "file", "oid": "a" * 40, "size": 1234, "path": "config.json"})
    api = FakeHfApi(entries)
    wanted = [entry["path"] for entry in entries]
    digests = hub_digests(REPO, REVISION, wanted, api=api)
    assert api.asked == [(REPO, tuple(wanted), REVISION)]
    assert digests == load_manifest(FIXTURES / "gpt-oss-20b.files.toml", "gpt-oss-20b")


def test_the_gpt_oss_manifest_for_models_toml_loads_and_adds_up_to_the_catalogs_shard_bytes():
    manifest = load_manifest(FIXTURES / "gpt-oss-20b.files.toml", "gpt-oss-20b")
    assert sorted(manifest) == [f"model-0000{i}-of-00003.safetensors" for i in (1, 2, 3)]
    assert manifest["model-00003-of-00003.safetensors"] == FileDigest(
        "16c32bb8dbd1fa8d556815706589d6d6480d29946196cd2fe2b721d4daf84132", 1_490_905_743)
    assert sum(digest.size_bytes for digest in manifest.values()) == 12_076_207_568  # weights_bytes_basis
    assert load_manifest(FIXTURES / "gpt-oss-20b.files.toml", "gemma-4-26b") == {}


HEX = "a" * 64


@pytest.mark.parametrize("entry", ['{ sha256 = "abc", bytes = 1 }', f'{{ sha256 = "{HEX.upper()}", bytes = 1 }}',
                                   f'{{ sha256 = "{HEX}" }}', f'{{ sha256 = "{HEX}", bytes = 0 }}',
                                   f'{{ sha256 = "{HEX}", bytes = 1, md5 = "x" }}', f'"{HEX}"'])
def test_a_malformed_manifest_entry_is_one_error_naming_the_file_the_model_and_the_entry(tmp_path, entry):
    catalog = tmp_path / "models.toml"
    catalog.write_text(f'["m".files]\n"w.safetensors" = {entry}\n')
    with pytest.raises(ModelStoreError, match=r"models.toml: model 'm': files.'w.safetensors' must be"):
        load_manifest(catalog, "m")


def test_list_shows_each_catalog_model_complete_partial_or_missing_and_its_stale_revisions(tmp_path):
    write_cache(tmp_path, REPO, "0" * 40, {"config.json": b"{}"}, ref=None)
    write_cache(tmp_path, REPO, REVISION, FILES)
    listed = {entry.model: entry for entry in list_models(CATALOG, cache_dir=tmp_path)}
    gpt = listed["gpt-oss-20b"]
    assert gpt.state == "complete" and gpt.other_revisions == ("0" * 40,)
    assert (gpt.size_bytes, gpt.path) == (sum(map(len, FILES.values())), snapshot_dir(REPO, REVISION, tmp_path))
    assert listed["gemma-4-26b"].state == "missing"
    assert {entry.state for entry in list_models(CATALOG, cache_dir=tmp_path / "nowhere")} == {"missing"}
    (gpt.path / "model-00002-of-00003.safetensors").unlink()
    gpt = {entry.model: entry for entry in list_models(CATALOG, cache_dir=tmp_path)}["gpt-oss-20b"]
    assert (gpt.state, gpt.detail) == ("partial", "missing model-00002-of-00003.safetensors")


def test_list_reports_a_repo_with_a_dangling_blob_as_damaged_instead_of_hiding_it(tmp_path):
    snapshot = write_cache(tmp_path, REPO, REVISION, FILES)
    (snapshot / "config.json").resolve().unlink()
    gpt = {entry.model: entry for entry in list_models(CATALOG, cache_dir=tmp_path)}["gpt-oss-20b"]
    assert gpt.state == "damaged" and "broken symlink" in gpt.detail


def test_rm_deletes_the_pinned_revision_keeps_others_and_a_second_rm_frees_nothing(tmp_path):
    config = FILES["config.json"]
    write_cache(tmp_path, REPO, "0" * 40, {"config.json": config}, ref=None)  # shares config.json's blob
    write_cache(tmp_path, REPO, REVISION, FILES)
    freed = remove_model(SPEC, cache_dir=tmp_path)
    assert freed == sum(len(data) for data in FILES.values()) - len(config)
    assert not snapshot_dir(REPO, REVISION, tmp_path).exists() and snapshot_dir(REPO, "0" * 40, tmp_path).is_dir()
    assert scan_cache_dir(tmp_path).warnings == []
    assert remove_model(SPEC, cache_dir=tmp_path) == 0
    assert remove_model(SPEC, cache_dir=tmp_path, all_revisions=True) == len(config)
    assert not (tmp_path / f"models--{REPO.replace('/', '--')}").exists()
    assert remove_model(SPEC, cache_dir=tmp_path / "nowhere") == 0
