"""One exception root: every exception class vfstream defines derives from VfStreamError,
in one of the branches the CLI maps to an exit status."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import vfstream
from vfstream.errors import (
    AccessRefused,
    DependencyUnavailable,
    InputRejected,
    Interrupted,
    OperatorError,
    VfStreamError,
)

BRANCHES = (InputRejected, DependencyUnavailable, OperatorError, AccessRefused, Interrupted)


def _exception_classes() -> list[type[BaseException]]:
    found = []
    for module_info in pkgutil.walk_packages(vfstream.__path__, "vfstream."):
        module = importlib.import_module(module_info.name)
        for _, value in inspect.getmembers(module, inspect.isclass):
            if (
                issubclass(value, BaseException)
                and value.__module__ == module.__name__
                and value.__module__.startswith("vfstream.")
            ):
                found.append(value)
    return found


def test_every_exception_vfstream_defines_has_the_one_root_and_a_branch() -> None:
    classes = _exception_classes()

    assert len(classes) > 15  # the walk found the package's exceptions
    outside = [c.__qualname__ for c in classes if not issubclass(c, VfStreamError)]
    assert outside == []
    unbranched = [
        c.__qualname__ for c in classes if c is not VfStreamError and not issubclass(c, BRANCHES)
    ]
    assert unbranched == []
