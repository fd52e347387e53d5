"""The names of a checkpoint's files and the patterns that recognise them (TF format doc §1).

A bundle at prefix `runs/a/ckpt-3` is `ckpt-3.index` plus `ckpt-3.data-SSSSS-of-NNNNN`;
a folder's `checkpoint` state file names its latest prefix. trackpoint adds two marks of
its own, for files of a save that has not finished: `.tp-tmp-` (a file renamed into place
once written) and `.tp-staging-` (a whole bundle staged beside the prefix it replaces,
see `_commit`). TensorFlow ignores both.

Every module that spells or recognises one of these names takes it from here. A leaf:
imports nothing of trackpoint. Knows names, not bytes.
"""

from __future__ import annotations

import re

__all__ = [
    "DATA_MARK",
    "DATA_SUFFIX",
    "INDEX_SUFFIX",
    "STAGING_MARK",
    "STATE_FILENAME",
    "TEMP_MARK",
    "data_file_name",
    "data_file_pattern",
    "index_file_name",
    "staging_prefix",
    "temp_file_name",
]

#: The end of a bundle's index file name (`ckpt-3.index`).
INDEX_SUFFIX = ".index"
#: What follows the prefix in a data file's name (`ckpt-3.data-00000-of-00001`).
DATA_MARK = ".data-"
#: A regular expression for the rest of a data file's name after its prefix; its groups
#: are the shard number and the shard count. TF writes 5 digits, more past 99999 shards.
DATA_SUFFIX = re.escape(DATA_MARK) + r"(\d{5,})-of-(\d{5,})"
#: The name of a folder's state file (TF's default `latest_filename`).
STATE_FILENAME = "checkpoint"
#: A temporary file, renamed to its final name once written (`ckpt-3.index.tp-tmp-<token>`).
TEMP_MARK = ".tp-tmp-"
#: A staged copy of a bundle replacing an existing prefix (`ckpt.tp-staging-<token>.index`).
STAGING_MARK = ".tp-staging-"


def data_file_name(prefix: str, shard: int, num_shards: int) -> str:
    """The name of data shard `shard` of `num_shards`, as TF spells it.

    Example:
        >>> data_file_name("ckpt-3", 1, 2)
        'ckpt-3.data-00001-of-00002'
    """
    return f"{prefix}{DATA_MARK}{shard:05d}-of-{num_shards:05d}"


def index_file_name(prefix: str) -> str:
    """The name of a bundle's index file.

    Example:
        >>> index_file_name("ckpt-3")
        'ckpt-3.index'
    """
    return f"{prefix}{INDEX_SUFFIX}"


def data_file_pattern(name: str) -> re.Pattern[str]:
    """A pattern whose `fullmatch` accepts the data files of `name` (a file name, no folder).

    `name` is taken literally; its groups are those of `DATA_SUFFIX` (shard, count).

    Example:
        >>> pattern = data_file_pattern("ckpt-3")
        >>> pattern.fullmatch("ckpt-3.data-00001-of-00002").groups()
        ('00001', '00002')
        >>> pattern.fullmatch("ckpt-33.data-00000-of-00001") is None
        True
    """
    return re.compile(re.escape(name) + DATA_SUFFIX)


def staging_prefix(prefix: str, token: str) -> str:
    """The prefix a new bundle for `prefix` is staged under.

    Example:
        >>> staging_prefix("ckpt", "ab12")
        'ckpt.tp-staging-ab12'
    """
    return f"{prefix}{STAGING_MARK}{token}"


def temp_file_name(final: str, token: str) -> str:
    """The temporary name a file is written under before it is renamed to `final`.

    Example:
        >>> temp_file_name("ckpt-3.index", "ab12")
        'ckpt-3.index.tp-tmp-ab12'
    """
    return f"{final}{TEMP_MARK}{token}"
