"""Copies the C header into the package when building, so an installed `herald` finds it
(`herald/_ffi.py` reads `herald/herald.h` first, else the repository's `include/herald.h`)."""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HEADER = Path(__file__).resolve().parent.parent.parent / "include" / "herald.h"


class BuildWithHeader(build_py):
    def run(self) -> None:
        super().run()
        if HEADER.is_file():
            target = Path(self.build_lib) / "herald" / "herald.h"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(HEADER, target)


setup(cmdclass={"build_py": BuildWithHeader})
