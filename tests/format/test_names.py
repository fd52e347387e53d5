"""File names of a checkpoint: what the writer makes is what every pattern recognises."""

from __future__ import annotations

import os
import re

import numpy as np
import pytest

from trackpoint.format import (
    DATA_SUFFIX,
    INDEX_SUFFIX,
    STAGING_MARK,
    TEMP_MARK,
    BundleWriter,
    data_file_name,
    data_file_pattern,
    index_file_name,
    staging_prefix,
    temp_file_name,
)


@pytest.mark.parametrize(
    "name", ["ckpt-3", "a.b+c", "w[0](1)*", "ckpt.data-00000-of-00001"], ids=str
)
@pytest.mark.parametrize(("shard", "count"), [(0, 1), (2, 3), (123456, 200000)], ids=str)
def test_data_file_pattern_accepts_exactly_the_data_files_of_its_name(name, shard, count):
    pattern = data_file_pattern(name)
    match = pattern.fullmatch(data_file_name(name, shard, count))
    assert match is not None
    assert (int(match.group(1)), int(match.group(2))) == (shard, count)
    # The name is taken literally: a regex metacharacter in it matches only itself.
    assert pattern.fullmatch(data_file_name(name + "x", shard, count)) is None
    assert pattern.fullmatch(data_file_name("x" + name, shard, count)) is None
    assert pattern.fullmatch(index_file_name(name)) is None
    assert pattern.fullmatch(temp_file_name(data_file_name(name, shard, count), "ab")) is None


def test_the_writer_makes_only_names_the_patterns_know(tmp_path, monkeypatch):
    prefix = str(tmp_path / "ckpt-1")
    seen: list[str] = []
    real_replace = os.replace

    def replace(source, target):
        seen.append(os.path.basename(source))
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", replace)
    with BundleWriter(prefix, num_shards=2) as writer:
        writer.add("w", np.arange(3))
    data = data_file_pattern("ckpt-1")
    finals = sorted(os.listdir(tmp_path))
    assert finals == ["ckpt-1.data-00000-of-00002", "ckpt-1.data-00001-of-00002", "ckpt-1.index"]
    assert [n for n in finals if data.fullmatch(n)] == finals[:2]
    assert finals[2].endswith(INDEX_SUFFIX)
    # Written under temporary names first, each its final name plus the temp mark.
    assert sorted(name.split(TEMP_MARK)[0] for name in seen) == finals
    assert all(TEMP_MARK in name for name in seen)


def test_staging_prefix_keeps_the_prefix_and_adds_the_mark():
    staged = staging_prefix("runs/ckpt", "ab12")
    assert staged.startswith("runs/ckpt" + STAGING_MARK)
    assert re.fullmatch(re.escape(staged) + DATA_SUFFIX, data_file_name(staged, 0, 1))
