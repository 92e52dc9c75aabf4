"""Build hook: the wheel carries `schema/` and `docs/openapi.yaml` as `gateway/_data/`.

They stay at the top of the repository (the sources people edit and link to); an installed
gateway finds the copies through `gateway.datafiles`. Everything else is in pyproject.toml.
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


class BuildPyWithData(build_py):
    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return  # an editable install reads the sources in place
        target = Path(self.build_lib) / "gateway" / "_data"
        sql = sorted((ROOT / "schema").rglob("*.sql"))
        if not sql:
            raise SystemExit("setup.py: no migrations in schema/: refusing to build a broken wheel")
        for src in sql:
            dst = target / "schema" / src.relative_to(ROOT / "schema")
            self.mkpath(str(dst.parent))
            self.copy_file(str(src), str(dst))
        self.copy_file(str(ROOT / "docs" / "openapi.yaml"), str(target / "openapi.yaml"))


setup(cmdclass={"build_py": BuildPyWithData})
