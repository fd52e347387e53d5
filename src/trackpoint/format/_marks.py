"""The name marks of files a save makes before its checkpoint is complete (see `_commit`)."""

#: A temporary file, renamed to its final name once written (`ckpt-3.index.tp-tmp-<token>`).
TEMP_MARK = ".tp-tmp-"
#: A staged copy of a bundle replacing an existing prefix (`ckpt.tp-staging-<token>.index`).
STAGING_MARK = ".tp-staging-"
