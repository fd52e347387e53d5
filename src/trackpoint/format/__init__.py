"""Bytes ⇄ structures: crc32c, varints, the SSTable `.index`, dtypes, TensorBundles, state files.

Knows bytes and files; knows nothing of objects, frameworks or threads.
"""

from ._commit import StagedSet as StagedSet
from ._commit import existing_files as existing_files
from ._commit import find_staged as find_staged
from ._commit import finish_interrupted_overwrite as finish_interrupted_overwrite
from ._commit import fsync_dir as fsync_dir
from ._commit import roll_forward as roll_forward
from ._crc32c import crc32c as crc32c
from ._crc32c import mask as mask
from ._crc32c import unmask as unmask
from ._dtypes import DType as DType
from ._dtypes import as_dtype as as_dtype
from ._encoding import EncodedValue as EncodedValue
from ._encoding import PreparedValue as PreparedValue
from ._encoding import check_key as check_key
from ._encoding import encode_value as encode_value
from ._encoding import entry_proto as entry_proto
from ._encoding import prepare_value as prepare_value
from ._encoding import prepared_bytes as prepared_bytes
from ._encoding import prepared_entry as prepared_entry
from ._encoding import prepared_size as prepared_size
from ._encoding import write_index as write_index
from ._encoding import write_sorted_index as write_sorted_index
from ._names import DATA_MARK as DATA_MARK
from ._names import DATA_SUFFIX as DATA_SUFFIX
from ._names import INDEX_SUFFIX as INDEX_SUFFIX
from ._names import STAGING_MARK as STAGING_MARK
from ._names import STATE_FILENAME as STATE_FILENAME
from ._names import TEMP_MARK as TEMP_MARK
from ._names import data_file_name as data_file_name
from ._names import data_file_pattern as data_file_pattern
from ._names import index_file_name as index_file_name
from ._names import staging_prefix as staging_prefix
from ._names import temp_file_name as temp_file_name
from ._reader import BundleReader as BundleReader
from ._reader import DataRange as DataRange
from ._reader import TensorInfo as TensorInfo
from ._reader import checksum_error as checksum_error
from ._reader import truncated_error as truncated_error
from ._slices import decode_slice_key as decode_slice_key
from ._slices import encode_slice_key as encode_slice_key
from ._sstable import TableBuilder as TableBuilder
from ._sstable import TableError as TableError
from ._sstable import TableReader as TableReader
from ._state_file import CheckpointState as CheckpointState
from ._state_file import is_complete as is_complete
from ._state_file import is_outside as is_outside
from ._state_file import latest_checkpoint as latest_checkpoint
from ._state_file import read_checkpoint_state as read_checkpoint_state
from ._state_file import write_checkpoint_state as write_checkpoint_state
from ._varint import encode_varint as encode_varint
from ._writer import BundleWriter as BundleWriter

__all__ = [
    "DATA_MARK",
    "DATA_SUFFIX",
    "INDEX_SUFFIX",
    "STAGING_MARK",
    "STATE_FILENAME",
    "TEMP_MARK",
    "BundleReader",
    "BundleWriter",
    "CheckpointState",
    "DType",
    "DataRange",
    "EncodedValue",
    "PreparedValue",
    "StagedSet",
    "TableBuilder",
    "TableError",
    "TableReader",
    "TensorInfo",
    "as_dtype",
    "check_key",
    "checksum_error",
    "crc32c",
    "data_file_name",
    "data_file_pattern",
    "decode_slice_key",
    "encode_slice_key",
    "encode_value",
    "encode_varint",
    "entry_proto",
    "existing_files",
    "find_staged",
    "finish_interrupted_overwrite",
    "fsync_dir",
    "index_file_name",
    "is_complete",
    "is_outside",
    "latest_checkpoint",
    "mask",
    "prepare_value",
    "prepared_bytes",
    "prepared_entry",
    "prepared_size",
    "read_checkpoint_state",
    "roll_forward",
    "staging_prefix",
    "temp_file_name",
    "truncated_error",
    "unmask",
    "write_checkpoint_state",
    "write_index",
    "write_sorted_index",
]
