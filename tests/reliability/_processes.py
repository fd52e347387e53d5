"""A child Python process for the reliability tests, read line by line as it prints.

Every wait has a timeout (`TIMEOUT`), reached only if the code under test hangs.
"""

from __future__ import annotations

import contextlib
import queue
import subprocess
import sys
import tempfile
import threading

#: Only reached if the code under test hangs.
TIMEOUT = 120.0


class Child:
    """`python SCRIPT ARGS...`, its stdout lines collected as they come.

    Args:
        script: The helper script to run.
        *args: Its arguments.
        stdin: Give it a pipe on stdin (`send`, `close_stdin`) instead of nothing.
    """

    def __init__(self, script: str, *args: str, stdin: bool = False) -> None:
        # Kept open for the process's life (closed by close()), so not a `with`.
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, script, *args],
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
        )
        self._stderr_text = ""
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def stderr(self) -> str:
        """The last 4,000 characters it wrote to stderr."""
        if self._stderr.closed:
            return self._stderr_text
        self._stderr.seek(0)
        return self._stderr.read().decode("utf-8", "replace")[-4000:]

    def expect(self, word: str) -> list[str]:
        """Read lines until one whose first word is `word`; return its words."""
        while True:
            try:
                line = self._queue.get(timeout=TIMEOUT)
            except queue.Empty:
                raise AssertionError(
                    f"the child printed no {word!r} line in {TIMEOUT} s; stderr:\n{self.stderr()}"
                ) from None
            if line is None:
                code = self.proc.wait(timeout=TIMEOUT)
                raise AssertionError(
                    f"the child ended (exit code {code}) before printing {word!r}; "
                    f"stderr:\n{self.stderr()}"
                )
            self.lines.append(line)
            fields = line.split()
            if fields and fields[0] == word:
                return fields

    def send(self, line: str) -> None:
        """Write `line` to its stdin."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def close_stdin(self) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            with contextlib.suppress(BrokenPipeError):  # it may have ended already
                self.proc.stdin.close()

    def kill(self) -> list[str]:
        """SIGKILL the process; return every line it printed."""
        self.proc.kill()
        self.finish()
        return self.lines

    def finish(self) -> int:
        """Wait for the process to end, collect its output; return its exit code."""
        code = self.proc.wait(timeout=TIMEOUT)
        self._reader.join(TIMEOUT)
        while True:
            try:
                line = self._queue.get_nowait()
            except queue.Empty:
                break
            if line is not None:
                self.lines.append(line)
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        return code

    def close(self) -> None:
        """Kill the process if it still runs, and release its pipes and files."""
        self.close_stdin()
        if self.proc.poll() is None:
            self.proc.kill()
        if self.proc.stdout is not None and not self.proc.stdout.closed:
            self.finish()
        self._stderr_text = self.stderr()
        self._stderr.close()
