"""Deliberate bugs that some test must notice: apply each to a copy and run its tests.

Each `Mutation` is one small change to a file of `src/trackpoint` and the tests that must
catch it. For each, `src/`, `tests/` and `pyproject.toml` are copied to a temporary
folder, the change is made there (the old text must occur exactly once), and pytest runs
the listed tests against the copy (`PYTHONPATH` is the copy's `src`; a plugin checks in
the pytest process that every `trackpoint` and `tests` module came from the copy, not from
the editable install). A mutation is *caught* when at least one listed test fails (every
listed test, for `every_test`); the report names the tests that failed. A control run of
all the listed tests on an unchanged copy must pass first, none skipped.

Run by hand, not in CI (a few minutes), from the repository's root:

    .venv/bin/python tests/mutations/run.py             # everything
    .venv/bin/python tests/mutations/run.py --only fsync --jobs 2
    .venv/bin/python tests/mutations/run.py --list

Exit status 0 only when the control passes and every mutation is caught. See README.md
for adding a mutation (one entry in `MUTATIONS`).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: A mutated run that takes longer than this has hung (a test's own timeout comes first).
RUN_TIMEOUT = 900
#: pytest-timeout's limit per test in the mutated runs, when it is installed.
TEST_TIMEOUT = 300


@dataclass(frozen=True)
class Mutation:
    """One deliberate bug and the tests that must notice it.

    Attributes:
        name: A short name (`--only` matches it).
        file: The file changed, relative to `src/trackpoint`.
        old: The exact text replaced; it must occur exactly once in the file.
        new: What replaces it.
        tests: pytest node ids or files (relative to the repository) to run.
        breaks: The behaviour the change breaks, in words.
        every_test: Each entry of `tests` must catch it (by at least one failing test),
            not just one of them.
    """

    name: str
    file: str
    old: str
    new: str
    tests: tuple[str, ...]
    breaks: str
    every_test: bool = False


LATEST = "tests/format/test_latest_checkpoint.py"
BUNDLE = "tests/format/test_bundle.py"
BAD_INPUT = "tests/format/test_bad_input.py"
ENGINE = "tests/engine/test_engine.py"
FLIPPED = f"{ENGINE}::test_restore_of_a_flipped_data_byte_raises_naming_the_tensor_and_file"
TORCH = "tests/adapters/test_torch.py"
TORCH_SLOTS = f"{TORCH}::test_optimizer_state_is_saved_under_tf_slot_keys_of_its_parameter"
ENGINE_COMMITS = (
    f"{ENGINE}::test_save_renames_every_data_file_before_the_index_appears",
    f"{ENGINE}::test_first_save_commits_data_then_index_then_state_file",
    f"{ENGINE}::test_three_shard_save_commits_every_data_file_before_the_index",
    "tests/test_manager.py::test_save_commits_data_then_index_then_state_file_then_deletes_the_oldest",
    "tests/test_async.py::test_async_save_commits_data_then_index_then_state_file",
)
DURABLE_SAVES = (
    f"{ENGINE}::test_durable_save_syncs_each_file_before_its_rename_and_the_folder_after",
    f"{ENGINE}::test_first_save_commits_data_then_index_then_state_file",
    "tests/test_manager.py::test_save_commits_data_then_index_then_state_file_then_deletes_the_oldest",
)
CRASH_POINTS = "tests/reliability/test_crash_points.py"
CRASH_PARTIAL = (
    f"{CRASH_POINTS}::test_every_crash_point_loses_nothing[manager-save-with-deletion-power]",
    f"{CRASH_POINTS}::test_every_crash_point_loses_nothing[manager-save-with-deletion-torn]",
)
BUNDLE_DURABLE = (
    f"{BUNDLE}::test_durable_write_syncs_each_file_before_its_rename_and_the_folder_after",
)

_ENGINE_DATA_THEN_INDEX = """\
            for temp, final in zip(temps, finals, strict=True):
                _do(store.replace, "renaming", final, temp, final)
                created.append(final)
            index = self._index_bytes(crcs)
            index_final = index_file_name(prefix)
            # Removed first if anything fails, even the folder's fsync after its rename: a
            # failed save must leave no index (an index marks a complete checkpoint).
            created.insert(0, index_final)
            try:
                store.write_file(index_final, index, durable=self.durable, token=self.token)
            except OSError as err:
                raise storage.save_error(err, "writing", index_final) from None
"""
_ENGINE_INDEX_THEN_DATA = """\
            index = self._index_bytes(crcs)
            index_final = index_file_name(prefix)
            created.insert(0, index_final)
            try:
                store.write_file(index_final, index, durable=self.durable, token=self.token)
            except OSError as err:
                raise storage.save_error(err, "writing", index_final) from None
            for temp, final in zip(temps, finals, strict=True):
                _do(store.replace, "renaming", final, temp, final)
                created.append(final)
"""

MUTATIONS: list[Mutation] = [
    # -- latest_checkpoint's scan (format/_state_file.py) --------------------------------
    Mutation(
        name="latest-scan-picks-the-oldest",
        file="format/_state_file.py",
        old="    for _, _, prefix in sorted(candidates, reverse=True):\n",
        new="    for _, _, prefix in sorted(candidates):\n",
        tests=(
            f"{LATEST}::test_scan_orders_checkpoints_by_their_number_not_by_their_name",
            f"{LATEST}::test_scan_orders_unnumbered_checkpoints_by_the_time_of_their_index",
        ),
        breaks="latest_checkpoint's fallback scan picks the oldest complete checkpoint",
        every_test=True,
    ),
    Mutation(
        name="latest-scan-ignores-data-files",
        file="format/_state_file.py",
        old="        return reader.data_files_complete()\n",
        new="        return True\n",
        tests=(
            f"{LATEST}::test_scan_skips_a_checkpoint_whose_data_file_is_missing",
            f"{LATEST}::test_scan_skips_a_checkpoint_whose_data_file_is_shorter_than_its_index_says",
            f"{LATEST}::test_state_file_naming_a_lost_checkpoint_falls_back_past_an_incomplete_one",
        ),
        breaks="_complete takes a checkpoint with missing or short data files for complete",
        every_test=True,
    ),
    Mutation(
        name="latest-without-state-file-is-none",
        file="format/_state_file.py",
        old="    found = _newest_complete(folder, first=[])\n",
        new="    found = None\n",
        tests=(f"{LATEST}::test_folder_without_a_state_file_gives_its_newest_complete_checkpoint",),
        breaks="a folder of checkpoints without a state file reads as 'no checkpoint'",
    ),
    # -- BundleWriter.finish (format/_writer.py) ----------------------------------------
    Mutation(
        name="bundle-writer-no-data-fsync",
        file="format/_writer.py",
        old="                    os.fsync(shard.file.fileno())\n",
        new="                    pass\n",
        tests=BUNDLE_DURABLE,
        breaks="a durable BundleWriter renames its data files into place unsynced",
    ),
    Mutation(
        name="bundle-writer-no-index-fsync",
        file="format/_writer.py",
        old="                    os.fsync(out.fileno())\n",
        new="                    pass\n",
        tests=BUNDLE_DURABLE,
        breaks="a durable BundleWriter renames its index into place unsynced",
    ),
    Mutation(
        name="bundle-writer-no-folder-fsync",
        file="format/_writer.py",
        old='                _fsync_dir(os.path.dirname(self.prefix) or ".")\n',
        new="                pass\n",
        tests=BUNDLE_DURABLE,
        breaks="a durable BundleWriter never syncs the folder, so its renames can be lost",
    ),
    Mutation(
        name="bundle-writer-index-renamed-first",
        file="format/_writer.py",
        old=(
            "            for shard in self._shards:\n"
            "                os.replace(shard.temp, shard.final)\n"
            "            os.replace(self._index_temp, self._index_final)\n"
        ),
        new=(
            "            os.replace(self._index_temp, self._index_final)\n"
            "            for shard in self._shards:\n"
            "                os.replace(shard.temp, shard.final)\n"
        ),
        tests=(f"{BUNDLE}::test_writer_renames_the_index_after_every_data_file", *BUNDLE_DURABLE),
        breaks="BundleWriter renames the index into place before the data files",
        every_test=True,
    ),
    # -- the engine's commit protocol (engine/_write.py, storage) -----------------------
    Mutation(
        name="engine-index-before-data",
        file="engine/_write.py",
        old=_ENGINE_DATA_THEN_INDEX,
        new=_ENGINE_INDEX_THEN_DATA,
        tests=ENGINE_COMMITS,
        breaks="a save writes the .index before its data files are in place",
        every_test=True,
    ),
    Mutation(
        name="engine-no-data-fsync",
        file="engine/_write.py",
        old="            if self.durable:\n                run_jobs(\n",
        new="            if False:\n                run_jobs(\n",
        tests=DURABLE_SAVES,
        breaks="a durable save renames its data files into place unsynced",
        every_test=True,
    ),
    Mutation(
        name="storage-write-file-no-fsync",
        file="storage/__init__.py",
        old="                if durable:\n                    self.fsync(fd)\n",
        new="                pass\n",
        tests=DURABLE_SAVES,
        breaks="a durable save renames its index and state file into place unsynced",
        every_test=True,
    ),
    Mutation(
        name="storage-write-file-no-folder-fsync",
        file="storage/__init__.py",
        old='        if durable:\n            self.fsync_dir(os.path.dirname(path) or ".")\n',
        new="        pass\n",
        tests=DURABLE_SAVES,
        breaks="a durable save never syncs the folder after the index or state file rename",
        every_test=True,
    ),
    # -- the object graph's keys and messages (graph/) ----------------------------------
    Mutation(
        name="slot-key-unescaped",
        file="graph/_keys.py",
        old="{optimizer_path}/{escape_local_name(slot_name)}",
        new="{optimizer_path}/{slot_name}",
        tests=(
            "tests/graph/test_saving.py::test_slot_key_escapes_the_slot_name_as_tf_does",
            "tests/graph/test_saving.py::test_saved_slot_with_dots_and_slashes_gets_an_escaped_key",
        ),
        breaks="slot_key no longer escapes the slot name ('.' and '/')",
        every_test=True,
    ),
    Mutation(
        name="rename-hint-always-same-shapes",
        file="graph/_explain.py",
        old="    if live.signature and live.signature == saved.signature:\n",
        new="    if live.signature:\n",
        tests=(
            "tests/graph/test_restore.py::test_rename_hint_says_same_shapes_only_when_they_are_the_same",
        ),
        breaks="the rename hint says 'the same variables and shapes' when they differ",
    ),
    Mutation(
        name="rename-pairs-by-name-first",
        file="graph/_explain.py",
        old="    scored.sort(key=lambda item: (-item[0], -item[1]))\n",
        new="    scored.sort(key=lambda item: (-item[1], -item[0]))\n",
        tests=(
            "tests/graph/test_restore_warnings.py::test_rename_pairs_by_structure_before_name_similarity",
        ),
        breaks="renames are paired by name similarity before structure",
    ),
    Mutation(
        name="partial-restore-warning-points-inside-trackpoint",
        file="graph/_status.py",
        old="PartialRestoreWarning, stacklevel=user_stacklevel())",
        new="PartialRestoreWarning, stacklevel=2)",
        tests=(
            "tests/graph/test_restore_warnings.py::test_optimizer_missing_from_the_checkpoint_warns_at_the_restore_call",
        ),
        breaks="the partial-restore warning names a trackpoint line, not the user's",
    ),
    # -- the parallel restore's checksums (engine/_read.py) -----------------------------
    Mutation(
        name="parallel-restore-crc-never-compared",
        file="engine/_read.py",
        old="        if expected >= 0 and computed != expected:\n",
        new="        if False:\n",
        tests=(FLIPPED,),
        breaks="the parallel restore never compares a tensor's crc32c",
    ),
    Mutation(
        name="parallel-restore-large-value-unchecked",
        file="engine/_read.py",
        old="        if verify:\n            table.check(row, crc)\n",
        new="        pass\n",
        tests=(f"{FLIPPED}[restore-large-value]", f"{FLIPPED}[read-large-value]"),
        breaks="a large value read straight into place skips its crc32c",
        every_test=True,
    ),
    Mutation(
        name="parallel-restore-small-values-unchecked",
        file="engine/_read.py",
        old="                    table.check(row, crc32c(data))  # the bytes just read\n",
        new="                    pass\n",
        tests=(f"{FLIPPED}[restore-batched-small-value]", f"{FLIPPED}[read-batched-small-value]"),
        breaks="small values read in one batch skip their crc32c",
        every_test=True,
    ),
    # -- the torch adapter's slot variables (adapters/torch.py) -------------------------
    Mutation(
        name="torch-tensor-state-also-as-json",
        file="adapters/torch.py",
        old=(
            "        plain = {k: v for k, v in (state or {}).items() "
            "if not isinstance(v, torch.Tensor)}\n"
        ),
        new="        plain = dict(state or {})\n",
        tests=(TORCH_SLOTS,),
        breaks="torch optimizer tensors are saved a second time, under optimizer/state",
    ),
    Mutation(
        name="torch-step-not-a-slot",
        file="adapters/torch.py",
        old="                if isinstance(value, torch.Tensor):\n",
        new="                if isinstance(value, torch.Tensor) and value.dim() > 0:\n",
        tests=(TORCH_SLOTS,),
        breaks="Adam's step (a 0-d tensor) is not saved as a slot of its parameter",
    ),
    # -- the index reader's limits (format/) ---------------------------------------------
    Mutation(
        name="snappy-declared-size-unchecked",
        file="format/_sstable.py",
        old="    if declared > limit:\n",
        new="    if False:\n",
        tests=(
            f"{BAD_INPUT}::"
            "test_reader_refuses_a_snappy_block_declaring_more_than_its_bytes_can_expand_to",
        ),
        breaks="a Snappy block's declared size is allocated before it is checked",
    ),
    Mutation(
        name="slice-count-unchecked",
        file="format/_reader.py",
        old="        if len(proto.slices) > _MAX_SLICES:\n",
        new="        if False:\n",
        tests=(f"{BAD_INPUT}::test_reader_refuses_an_entry_listing_more_slices_than_it_reads",),
        breaks="an entry listing millions of slices is walked instead of refused",
    ),  # -- the crash harness's disk models (tests/reliability) -----------------------------
    # The torn disk: a data file renamed into place unsynced has its full size but not its
    # bytes (the power disk shows it short instead; both must fail).
    Mutation(
        name="crash-harness-torn-data-unsynced",
        file="engine/_write.py",
        old="            if self.durable:\n                run_jobs(\n",
        new="            if False:\n                run_jobs(\n",
        tests=(f"{CRASH_POINTS}::test_every_crash_point_loses_nothing[first-save-torn]",),
        breaks="data files renamed before they are durable, seen on the torn disk",
        every_test=True,
    ),
    # Partial rename loss: the manager's first state-file write not durable. Power loss
    # undoing every folder operation since the last folder fsync never shows it; keeping
    # a prefix of them does (an empty state file).
    Mutation(
        name="crash-harness-partial-rename-first-state-write",
        file="manager.py",
        old=(
            "            try:\n                self._record_state(durable)\n"
            "            except OSError:\n"
        ),
        new=(
            "            try:\n                self._record_state(False)\n"
            "            except OSError:\n"
        ),
        tests=CRASH_PARTIAL,
        breaks="the manager's first state-file write is not durable",
        every_test=True,
    ),
    Mutation(
        name="crash-harness-partial-rename-second-state-write",
        file="manager.py",
        old="                if self._sweep():\n                    self._record_state(durable)\n",
        new="                if self._sweep():\n                    self._record_state(False)\n",
        tests=CRASH_PARTIAL,
        breaks="the manager's state-file write after deleting old checkpoints is not durable",
        every_test=True,
    ),
]


class MutationError(Exception):
    """A mutation cannot be applied as written (its old text is not there exactly once)."""


# -- running one copy ----------------------------------------------------------------------


#: A pytest plugin (loaded with `-p`) that fails the run when a `trackpoint` or `tests`
#: module was imported from anywhere but the copy, and reports where they came from.
_GUARD = """\
import os
import sys

import pytest

_ROOTS = {
    "trackpoint": os.path.realpath(os.environ["TP_MUTATION_SRC"]) + os.sep,
    "tests": os.path.realpath(os.environ["TP_MUTATION_TESTS"]) + os.sep,
}


def _foreign():
    found = []
    for name, module in list(sys.modules.items()):
        root = _ROOTS.get(name.partition(".")[0])
        where = getattr(module, "__file__", None)
        if root and where and not os.path.realpath(where).startswith(root):
            found.append(f"{name} from {where}")
    return found


def pytest_configure(config):
    import trackpoint  # noqa: F401 - where it comes from is the point

    foreign = _foreign()
    if foreign:
        raise pytest.UsageError("imported from outside the copy: " + "; ".join(foreign))


def pytest_sessionfinish(session, exitstatus):
    foreign = _foreign()
    mutated = os.environ["TP_MUTATION_MODULE"]
    with open(os.environ["TP_MUTATION_REPORT"], "w", encoding="utf-8") as report:
        if foreign:
            report.write("foreign: " + "; ".join(foreign) + "\\n")
        module = sys.modules.get(mutated)
        report.write(f"module: {getattr(module, '__file__', None)}\\n")
    if foreign:
        session.exitstatus = 3
"""


@dataclass
class TestOutcome:
    """One test's result in a run (failure message: its first line)."""

    nodeid: str
    outcome: str  # "passed", "failed", "error" or "skipped"
    message: str = ""


@dataclass
class RunResult:
    """What a pytest run on one copy gave."""

    returncode: int
    outcomes: list[TestOutcome] = field(default_factory=list)
    problem: str = ""  # why the run itself is not trustworthy ("" when it is)
    seconds: float = 0.0
    output: str = ""


def _copy_repository(work: Path) -> Path:
    copy = work / "repo"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".hypothesis", ".pytest_cache")
    shutil.copytree(ROOT / "src", copy / "src", ignore=ignore)
    shutil.copytree(ROOT / "tests", copy / "tests", ignore=ignore)
    shutil.copy2(ROOT / "pyproject.toml", copy / "pyproject.toml")
    return copy


def apply_mutation(source: str, mutation: Mutation) -> str:
    """`source` with the mutation made; raises `MutationError` unless it applies once."""
    count = source.count(mutation.old)
    if count != 1:
        raise MutationError(
            f"mutation {mutation.name!r}: its old text occurs {count} times in "
            f"src/trackpoint/{mutation.file}, not exactly once; update the entry to today's "
            f"source:\n{textwrap.indent(mutation.old, '    | ')}"
        )
    if mutation.new == mutation.old:
        raise MutationError(f"mutation {mutation.name!r} changes nothing")
    return source.replace(mutation.old, mutation.new)


def _module_name(file: str) -> str:
    parts = Path(file).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(("trackpoint", *parts))


def _nodeid(classname: str, name: str, copy: Path) -> str:
    """The pytest node id of a junit testcase (junit gives dotted module and class names)."""
    parts = classname.split(".")
    for cut in range(len(parts), 0, -1):
        if (copy / Path(*parts[:cut])).with_suffix(".py").is_file():
            return "::".join(["/".join(parts[:cut]) + ".py", *parts[cut:], name])
    return f"{classname}::{name}"


# A test that failed and then errored in teardown is reported twice: the failure tells why.
_RANK = {"passed": 0, "skipped": 1, "error": 2, "failed": 3}
_KINDS = {"failure": "failed", "error": "error", "skipped": "skipped"}


def _read_junit(path: Path, copy: Path) -> list[TestOutcome]:
    outcomes: dict[str, TestOutcome] = {}
    # Our own pytest run's report, not untrusted input.
    tree = ET.parse(path)  # noqa: S314
    for case in tree.iter("testcase"):
        nodeid = _nodeid(case.get("classname", ""), case.get("name", ""), copy)
        result = outcomes.setdefault(nodeid, TestOutcome(nodeid, "passed"))
        for child in case:
            kind = _KINDS.get(child.tag)
            if kind is not None and _RANK[kind] > _RANK[result.outcome]:
                message = (child.get("message") or child.text or "").strip()
                result.outcome = kind
                result.message = message.splitlines()[0] if message else ""
    return list(outcomes.values())


def run_tests(mutation: Mutation | None, tests: tuple[str, ...], work: Path) -> RunResult:
    """Copy the repository into `work`, apply `mutation` (None: the control), run `tests`."""
    copy = _copy_repository(work)
    module = "trackpoint"
    if mutation is not None:
        target = copy / "src" / "trackpoint" / mutation.file
        target.write_text(
            apply_mutation(target.read_text(encoding="utf-8"), mutation), encoding="utf-8"
        )
        module = _module_name(mutation.file)
    guard = work / "guard"
    guard.mkdir()
    (guard / "_mutation_guard.py").write_text(_GUARD, encoding="utf-8")
    junit, report = work / "junit.xml", work / "guard-report.txt"
    env = dict(os.environ)
    env.update(
        PYTHONPATH=os.pathsep.join([str(copy / "src"), str(guard)]),
        PYTHONDONTWRITEBYTECODE="1",
        TP_MUTATION_SRC=str(copy / "src" / "trackpoint"),
        TP_MUTATION_TESTS=str(copy / "tests"),
        TP_MUTATION_MODULE=module,
        TP_MUTATION_REPORT=str(report),
    )
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "_mutation_guard",
        "-p",
        "no:cacheprovider",
        "-p",
        "no:randomly",
        "-q",
        f"--junitxml={junit}",
        *tests,
    ]
    if importlib.util.find_spec("pytest_timeout") is not None:
        command.insert(-len(tests), f"--timeout={TEST_TIMEOUT}")
    started = time.monotonic()
    try:
        done = subprocess.run(
            command,
            cwd=copy,
            env=env,
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired as err:
        # The output of a timed-out run comes as bytes even with text=True.
        out = err.stdout.decode("utf-8", "replace") if err.stdout else ""
        return RunResult(-1, problem=f"pytest ran over {RUN_TIMEOUT} s (hung)", output=out)
    result = RunResult(done.returncode, seconds=time.monotonic() - started)
    result.output = done.stdout + done.stderr
    if not report.is_file():
        result.problem = "the import guard did not report (pytest did not start properly)"
    else:
        lines = report.read_text(encoding="utf-8").splitlines()
        foreign = [line for line in lines if line.startswith("foreign:")]
        loaded = next((line[len("module: ") :] for line in lines if line.startswith("module:")), "")
        if foreign:
            result.problem = foreign[0]
        elif mutation is not None and not loaded.startswith(str(copy / "src")):
            result.problem = f"the mutated module {module} was not imported from the copy"
    if junit.is_file():
        result.outcomes = _read_junit(junit, copy)
    if not result.problem and done.returncode not in (0, 1):
        result.problem = f"pytest exited with status {done.returncode}"
    if not result.problem and not result.outcomes:
        result.problem = "no test ran"
    return result


def _selected(nodeid: str, selection: str) -> bool:
    selection = selection.rstrip("/")
    return nodeid == selection or nodeid.startswith(tuple(selection + s for s in "[:/"))


# -- judging and reporting -----------------------------------------------------------------


@dataclass
class Verdict:
    """A mutation's result: caught or not, and by which tests."""

    mutation: Mutation
    caught: bool
    catchers: list[TestOutcome]
    note: str
    seconds: float
    output: str = ""


def judge(mutation: Mutation, result: RunResult) -> Verdict:
    """Whether `result` (a run of the mutated copy) caught `mutation`."""
    failing = [o for o in result.outcomes if o.outcome in ("failed", "error")]
    if result.problem:
        note = f"ERROR: {result.problem}"
        return Verdict(mutation, False, failing, note, result.seconds, result.output)
    missed = [s for s in mutation.tests if not any(_selected(o.nodeid, s) for o in failing)]
    if not failing:
        note = f"every one of {len(result.outcomes)} test(s) passed"
        return Verdict(mutation, False, [], note, result.seconds, result.output)
    if mutation.every_test and missed:
        note = "not caught by " + ", ".join(missed)
        return Verdict(mutation, False, failing, note, result.seconds, result.output)
    return Verdict(mutation, True, failing, "", result.seconds)


def _describe(verdict: Verdict, position: str) -> str:
    mutation = verdict.mutation
    status = "caught" if verdict.caught else "NOT CAUGHT"
    lines = [
        f"[{position}] {status:<10} {mutation.name}  ({verdict.seconds:.1f} s)",
        f"      breaks: {mutation.breaks}",
        f"      change: src/trackpoint/{mutation.file}",
    ]
    if verdict.note:
        lines.append(f"      {verdict.note}")
    for outcome in verdict.catchers:
        message = outcome.message if len(outcome.message) <= 110 else outcome.message[:107] + "..."
        lines.append(f"      {outcome.outcome} {outcome.nodeid}")
        if message:
            lines.append(f"          {message}")
    if not verdict.caught and verdict.output:
        lines.append(textwrap.indent(verdict.output.rstrip()[-3000:], "      | "))
    return "\n".join(lines)


def _union(mutations: list[Mutation]) -> tuple[str, ...]:
    tests: dict[str, None] = {}
    for mutation in mutations:
        for test in mutation.tests:
            tests.setdefault(test)
    # A parametrized id inside an already listed test would make pytest run it twice.
    return tuple(t for t in tests if not any(t != o and _selected(t, o) for o in tests))


def run_control(mutations: list[Mutation], work: Path) -> bool:
    """Run every listed test on an unchanged copy; True when all ran and passed."""
    tests = _union(mutations)
    print(f"control: {len(tests)} selection(s) on an unchanged copy ...", flush=True)
    result = run_tests(None, tests, work)
    bad = [o for o in result.outcomes if o.outcome != "passed"]
    unmatched = [t for t in tests if not any(_selected(o.nodeid, t) for o in result.outcomes)]
    passed = not result.problem and not bad and not unmatched and result.returncode == 0
    print(
        f"control: {'passed' if passed else 'FAILED'} "
        f"({len(result.outcomes)} tests, {result.seconds:.1f} s)",
        flush=True,
    )
    if result.problem:
        print(f"  ERROR: {result.problem}")
    for outcome in bad:
        # A skipped test catches nothing: the control must run every one.
        print(f"  {outcome.outcome} {outcome.nodeid}: {outcome.message}")
    for test in unmatched:
        print(f"  no test ran for {test}")
    if not passed:
        print(textwrap.indent(result.output.rstrip()[-5000:], "  | "))
    return passed


def main(argv: list[str] | None = None) -> int:
    """Run the control and the mutations; the exit status says whether all were caught."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        help="run mutations whose name contains this (repeatable)",
    )
    parser.add_argument("--jobs", type=int, default=1, help="mutations run at once (default 1)")
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    parser.add_argument("--keep", action="store_true", help="keep the temporary copies")
    parser.add_argument("--no-control", action="store_true", help="skip the control run")
    args = parser.parse_args(argv)

    chosen = [m for m in MUTATIONS if not args.only or any(o in m.name for o in args.only)]
    names = [m.name for m in MUTATIONS]
    duplicated = {n for n in names if names.count(n) > 1}
    if duplicated:
        print(f"duplicate mutation names: {sorted(duplicated)}", file=sys.stderr)
        return 2
    if args.list:
        for mutation in chosen:
            print(f"{mutation.name:<42} src/trackpoint/{mutation.file}: {mutation.breaks}")
        return 0
    if not chosen:
        print("no mutation matches --only", file=sys.stderr)
        return 2
    # Every mutation must apply to today's source before anything runs.
    try:
        for mutation in chosen:
            source = (ROOT / "src" / "trackpoint" / mutation.file).read_text(encoding="utf-8")
            apply_mutation(source, mutation)
    except MutationError as err:
        print(err, file=sys.stderr)
        return 2

    work = Path(tempfile.mkdtemp(prefix="tp-mutations-"))
    started = time.monotonic()
    try:
        control = True
        if not args.no_control:
            (work / "control").mkdir()
            control = run_control(chosen, work / "control")
            if not control:
                print("the control run failed: mutation results would mean nothing")
                return 1
        print(f"{len(chosen)} mutation(s), {args.jobs} at a time:", flush=True)

        def one(index: int) -> Verdict:
            mutation = chosen[index]
            folder = work / f"{index:02d}-{mutation.name}"
            folder.mkdir()
            return judge(mutation, run_tests(mutation, mutation.tests, folder))

        verdicts: list[Verdict] = []
        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            for count, verdict in enumerate(pool.map(one, range(len(chosen))), start=1):
                verdicts.append(verdict)
                print(_describe(verdict, f"{count:>2}/{len(chosen)}"), flush=True)
    finally:
        if args.keep:
            print(f"copies kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    survivors = [v.mutation.name for v in verdicts if not v.caught]
    print(
        f"\n{len(verdicts)} mutations: {len(verdicts) - len(survivors)} caught, "
        f"{len(survivors)} not caught; control "
        f"{'skipped' if args.no_control else 'passed'}; {time.monotonic() - started:.0f} s"
    )
    if survivors:
        print("NOT CAUGHT: " + ", ".join(survivors))
    return 1 if survivors or not control else 0


if __name__ == "__main__":
    sys.exit(main())
