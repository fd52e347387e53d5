"""Every test leaves the process as it found it (issue 11), or fails, naming what it changed.

An interrupt test once passed alone and failed in a full run, because what ran before it
had left the process different. So around every test this plugin (registered by
`tests/conftest.py`) compares, before and after:

- the handler of every signal (SIGALRM included: pytest-timeout's handler stays in place
  for the whole test, so a test must leave it too);
- `warnings.filters`, `os.environ`, the working directory, the umask, `sys.path`, and
  NumPy's floating-point error handling;
- trackpoint's process-wide state: the storage saves go through, the types and finders
  registered with it, the adapters it loaded, background-save failures not yet reported,
  and every module-level name and class attribute of its modules (a test that swaps one
  without putting it back changes every later test).

The test that changed something fails at teardown with the list, and the state is put
back, so that one leak makes one failure, not a cascade. The comparison runs after the
test's own function-scoped fixtures (monkeypatch included) have been torn down.

Deliberately allowed:

- A framework's first imports: TensorFlow sets environment variables (`TF2_BEHAVIOR`,
  ...) and warning filters as it loads; JAX and PyTorch add warning filters, and PyTorch
  loads parts of itself on first use (`torch._dynamo` sets `TORCHINDUCTOR_CACHE_DIR`,
  imports sympy, which adds a filter). During a test in which a module of one of
  `FRAMEWORKS` is imported for the first time, signal handlers, the environment and the
  filters may change; what it leaves is the baseline after it.
- An adapter's first import: trackpoint loads `trackpoint.adapters.<framework>` the first
  time it meets an object of that framework, and the adapter registers its types and
  finders (and `_LOADED_ADAPTERS`, the adapters it has tried, only grows). Modules
  imported during the test are not compared either.
- Caches tied to objects' lifetimes (weak dictionaries in the adapters, the read-buffer
  pool) and the random state (pytest-randomly reseeds it for every test).
- A doctest's registrations: a docstring shows `trackpoint.register` as a user calls it,
  with a class of its own that no other test can meet; they are put back, silently.
- pytest restores `warnings.filters` after each phase of a test itself; comparing them
  here catches what escapes that (a filter set by a thread the test left running).
"""

from __future__ import annotations

import dataclasses
import os
import signal
import sys
import types
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from trackpoint import storage
from trackpoint.engine import _snapshot
from trackpoint.graph import _trackable

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping

#: Frameworks whose first import changes the process (environment, warning filters).
FRAMEWORKS = ("tensorflow", "keras", "tf_keras", "torch", "jax", "flax", "optax")

# SIGKILL and SIGSTOP cannot be handled; every other signal's handler is compared.
_SIGNALS = sorted(
    (s for s in signal.valid_signals() if s not in (signal.SIGKILL, signal.SIGSTOP)), key=int
)
_MISSING = object()


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _timeout_off(number: int, before: object, after: object) -> bool:
    """Whether pytest-timeout itself reset SIGALRM (it stops the timer of a test that failed
    when pytest reports the exception, before the teardown)."""
    return (
        number == signal.SIGALRM
        and getattr(before, "__module__", None) == "pytest_timeout"
        and after == signal.SIG_DFL
    )


def _umask() -> int | None:
    # Read where the kernel shows it: setting it to read it would race other threads.
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    return None


def _is_trackpoint(module_name: str) -> bool:
    # Not the generated protobuf modules: their classes cache enum values as they are used.
    return (
        module_name == "trackpoint" or module_name.startswith("trackpoint.")
    ) and not module_name.startswith("trackpoint.format.protos.")


@dataclasses.dataclass
class _Snapshot:
    """What one moment of the process looks like, in the parts compared."""

    frameworks: int  # how many modules of FRAMEWORKS are loaded
    modules: frozenset[str]  # trackpoint's modules loaded
    handlers: dict[int, Any]
    filters: list[Any]
    environ: dict[str, str]
    cwd: str
    umask: int | None
    path: list[str]
    numpy_errors: Any  # np.seterr's keyword arguments
    storage: storage.Storage
    registry: dict[type, Any]
    finders: list[Any]
    unreported: dict[int, Any]
    names: dict[tuple[str, ...], object]  # (module,) + (class,)? + (name,) → value

    @classmethod
    def take(cls) -> _Snapshot:
        modules = frozenset(name for name in list(sys.modules) if _is_trackpoint(name))
        return cls(
            frameworks=sum(name.partition(".")[0] in FRAMEWORKS for name in list(sys.modules)),
            modules=modules,
            handlers={number: signal.getsignal(number) for number in _SIGNALS},
            filters=list(warnings.filters),
            environ={k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"},
            cwd=os.getcwd(),
            umask=_umask(),
            path=list(sys.path),
            numpy_errors=np.geterr(),
            storage=storage.current(),
            registry=dict(_trackable._REGISTRY),
            finders=list(_trackable._FINDERS),
            unreported=dict(_snapshot._UNREPORTED),
            names=_names(modules),
        )

    def changes(self, after: _Snapshot) -> list[str]:
        """What differs in `after`, one line each (allowances applied)."""
        changed: list[str] = []
        framework_loaded = after.frameworks != self.frameworks
        if not framework_loaded:
            changed += _diff(
                {_signal_name(n): h for n, h in self.handlers.items()},
                {
                    _signal_name(n): self.handlers[n] if _timeout_off(n, self.handlers[n], h) else h
                    for n, h in after.handlers.items()
                },
                "the {} handler",
            )
            if self.filters != after.filters:
                changed.append(f"warnings.filters: {_short(self.filters)} -> {after.filters}")
            changed += _diff(self.environ, after.environ, "os.environ[{!r}]", equal=True)
        for label, old, new in [
            ("the working directory", self.cwd, after.cwd),
            ("the umask", self.umask, after.umask),
            ("sys.path", self.path, after.path),
            ("numpy.geterr()", self.numpy_errors, after.numpy_errors),
        ]:
            if old != new:
                changed.append(f"{label}: {_short(old)} -> {_short(new)}")
        if after.storage is not self.storage:
            changed.append(f"trackpoint.storage.current(): {self.storage!r} -> {after.storage!r}")
        if after.modules == self.modules:  # else an adapter (or another module) loaded
            changed += _diff(self.registry, after.registry, "trackpoint.register({!r})")
            if after.finders != self.finders:
                changed.append(f"trackpoint.register_finder: {self.finders} -> {after.finders}")
        changed += _diff(self.unreported, after.unreported, "background save failure {}")
        names = {k: v for k, v in after.names.items() if k[0] in self.modules}
        changed += _diff(self.names, names, "{}", key_text=".".join)
        return changed

    def restore(self, after: _Snapshot) -> None:
        """Put back what was compared (not what a first import set), for the next test."""
        if after.frameworks == self.frameworks:
            for number, handler in self.handlers.items():
                if handler is not None and signal.getsignal(number) is not handler:
                    signal.signal(number, handler)
            # warnings.filters needs nothing: pytest puts them back after each phase.
            for variable in os.environ.keys() - self.environ.keys() - {"PYTEST_CURRENT_TEST"}:
                del os.environ[variable]
            os.environ.update(self.environ)
        os.chdir(self.cwd)
        if self.umask is not None:
            os.umask(self.umask)
        sys.path[:] = self.path
        np.seterr(**self.numpy_errors)
        storage._current = self.storage
        if after.modules == self.modules:
            _trackable._REGISTRY.clear()
            _trackable._REGISTRY.update(self.registry)
            _trackable._FINDERS[:] = self.finders
        _snapshot._UNREPORTED.clear()
        _snapshot._UNREPORTED.update(self.unreported)
        now = _names(self.modules)
        for key in now.keys() - self.names.keys():
            delattr(_owner(key), key[-1])
        for key, value in self.names.items():
            if now.get(key, _MISSING) is not value:
                setattr(_owner(key), key[-1], value)


def _names(modules: frozenset[str]) -> dict[tuple[str, ...], object]:
    """Every module-level name, and the attributes of the classes defined there."""
    found: dict[tuple[str, ...], object] = {}
    for module_name in modules:
        module = sys.modules.get(module_name)
        if module is None:
            continue
        for name, value in list(vars(module).items()):
            if isinstance(value, types.ModuleType):
                continue  # a submodule is bound to its package by its first import
            found[(module_name, name)] = value
            if isinstance(value, type) and value.__module__ == module_name:
                for attribute, member in list(vars(value).items()):
                    if attribute not in ("__dict__", "__weakref__"):
                        found[(module_name, name, attribute)] = member
    return found


def _owner(key: tuple[str, ...]) -> Any:
    owner: Any = sys.modules[key[0]]
    return getattr(owner, key[1]) if len(key) == 3 else owner


def _diff(
    before: Mapping[Any, object],
    after: Mapping[Any, object],
    label: str,
    *,
    equal: bool = False,
    key_text: Callable[[Any], str] = lambda key: key,
) -> list[str]:
    """One line per key whose value is new, gone or another object (or unequal: `equal`)."""
    lines = []
    for key in before.keys() | after.keys():
        old, new = before.get(key, _MISSING), after.get(key, _MISSING)
        if old is new or (equal and old == new):
            continue
        shown_old = "(none)" if old is _MISSING else _short(old)
        shown_new = "(none)" if new is _MISSING else _short(new)
        lines.append(f"{label.format(key_text(key))}: {shown_old} -> {shown_new}")
    return sorted(lines)


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 160 else text[:157] + "..."


@pytest.fixture(autouse=True)
def _leaves_the_process_as_it_found_it(request: pytest.FixtureRequest) -> Iterator[None]:
    before = _Snapshot.take()
    yield
    after = _Snapshot.take()
    changed = before.changes(after)
    if isinstance(request.node, pytest.DoctestItem):
        changed = [line for line in changed if not line.startswith("trackpoint.register")]
        before.restore(after)
    if changed:
        before.restore(after)
        pytest.fail(
            f"{request.node.nodeid} left the process changed; put it back (monkeypatch, "
            "a `with` block or a `finally`):\n  " + "\n  ".join(changed),
            pytrace=False,
        )
