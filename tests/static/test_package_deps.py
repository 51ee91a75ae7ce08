"""Each package declares what it imports.

For every package under libs/, services/, tools/ and examples/, the imports of its src files (read with
`ast`, at any depth, standard library and the package itself left out) are mapped to the
distributions installed in this environment, and each must be declared in that package's
pyproject.toml. orders-common keeps its web, docs and Kafka modules behind extras: a module of
it may import what an extra declares, and a package that imports such a module must ask for
that extra (`orders-common[web]`). So an import nobody declared fails `make test`, not an
image build or a fresh install.
"""

import ast
import re
import sys
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
from packaging.requirements import Requirement

pytestmark = pytest.mark.static

ROOT = Path(__file__).resolve().parents[2]
COMMON = "orders-common"
COMMON_IMPORT = "orders_common"


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class Package:
    name: str  # the distribution, normalized
    folder: Path
    imports: frozenset[str]  # its own top-level import names
    dependencies: dict[str, frozenset[str]]  # distribution -> extras asked of it
    extras: dict[str, frozenset[str]] = field(default_factory=dict)  # extra -> distributions

    def files(self) -> Iterator[Path]:
        for name in sorted(self.imports):
            yield from sorted((self.folder / "src" / name).rglob("*.py"))


def parse(requirements: list[str]) -> dict[str, frozenset[str]]:
    parsed: dict[str, frozenset[str]] = {}
    for line in requirements:
        requirement = Requirement(line)
        name = normalize(requirement.name)
        parsed[name] = parsed.get(name, frozenset()) | frozenset(requirement.extras)
    return parsed


@cache
def packages() -> dict[str, Package]:
    found: dict[str, Package] = {}
    for pyproject in sorted(ROOT.glob("*/*/pyproject.toml")):
        if pyproject.parts[-3] not in ("libs", "services", "tools", "examples"):
            continue
        project = tomllib.loads(pyproject.read_text())["project"]
        src = pyproject.parent / "src"
        imports = frozenset(p.name for p in src.iterdir() if (p / "__init__.py").is_file())
        extras = {
            extra: frozenset(parse(requirements))
            for extra, requirements in project.get("optional-dependencies", {}).items()
        }
        name = normalize(project["name"])
        found[name] = Package(name, pyproject.parent, imports, parse(project.get("dependencies", [])), extras)
    return found


def module_name(path: Path) -> str:
    """The dotted name a package's src file is imported as: libs/common/src/a/b.py is a.b."""
    parts = path.relative_to(ROOT).with_suffix("").parts[3:]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, module: str | None = None) -> set[str]:
    """What a file imports, dotted and absolute, at any depth (in functions, in TYPE_CHECKING
    blocks); relative imports are resolved against the file's own package."""
    package = (module or module_name(path)).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    modules: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            name = ".".join([*base, *([node.module] if node.module else [])])
            modules.add(name)
            # `from orders_common import http` imports the module orders_common.http
            modules.update(f"{name}.{alias.name}" for alias in node.names)
    return modules


@cache
def first_party() -> dict[str, str]:
    """Top-level import name -> distribution, for the packages of this repository."""
    return {module: package.name for package in packages().values() for module in package.imports}


@cache
def installed() -> Mapping[str, list[str]]:
    return packages_distributions()


def distributions(modules: set[str], own: Package) -> dict[str, set[str]]:
    """Distribution -> the modules that need it, for every import of another distribution."""
    needed: dict[str, set[str]] = {}
    for module in modules:
        top = module.partition(".")[0]
        if top in sys.stdlib_module_names or top in own.imports:
            continue
        if top in first_party():
            names = [first_party()[top]]
        else:
            names = [normalize(name) for name in installed().get(top, [])]
            assert names, f"{own.name} imports {top}, which no installed distribution provides"
        # A module that more than one distribution provides is declared through any of them.
        needed.setdefault("|".join(sorted(set(names))), set()).add(top)
    return needed


@cache
def common_module_needs() -> dict[str, frozenset[str]]:
    """orders_common's modules -> the distributions each needs, with what its own imports of
    other orders_common modules need (so a core module cannot lean on one behind an extra)."""
    common = packages()[COMMON]
    direct: dict[str, set[str]] = {}
    internal: dict[str, set[str]] = {}
    for path in common.files():
        module = module_name(path)
        modules = imported_modules(path)
        direct[module] = set(distributions(modules, common))
        internal[module] = {m for m in modules if m.partition(".")[0] == COMMON_IMPORT}
    needs: dict[str, frozenset[str]] = {}

    def resolve(module: str, seen: frozenset[str]) -> frozenset[str]:
        total = set(direct[module])
        for other in internal[module]:
            if other in direct and other not in seen:
                total |= resolve(other, seen | {other})
        return frozenset(total)

    for module in direct:
        needs[module] = resolve(module, frozenset({module}))
    return needs


def covered(distribution: str, declared: set[str]) -> bool:
    return any(name in declared for name in distribution.split("|"))


def consumers() -> list[str]:
    return sorted(name for name in packages() if name != COMMON)


def test_every_package_is_found() -> None:
    assert {COMMON, "orders-api", "orders-processor", "orders-query"} <= set(packages())
    for package in packages().values():
        assert package.imports, f"{package.folder} has no package under src/"
        assert any(True for _ in package.files())


@pytest.mark.parametrize("name", consumers())
def test_a_package_declares_every_distribution_it_imports(name: str) -> None:
    package = packages()[name]
    declared = set(package.dependencies)
    missing: dict[str, set[str]] = {}
    for path in package.files():
        for distribution, modules in distributions(imported_modules(path), package).items():
            if not covered(distribution, declared):
                missing.setdefault(distribution, set()).update(
                    f"{path.relative_to(ROOT)}: {module}" for module in modules
                )
    assert not missing, f"{name} imports distributions its pyproject.toml does not declare: {missing}"


@pytest.mark.parametrize("name", consumers())
def test_a_package_asks_for_the_extras_of_orders_common_it_imports(name: str) -> None:
    package = packages()[name]
    common = packages()[COMMON]
    extras = package.dependencies.get(COMMON, frozenset())
    unknown = extras - set(common.extras)
    assert not unknown, f"{name} asks orders-common for extras it does not have: {unknown}"
    available = set(common.dependencies).union(*(common.extras[extra] for extra in extras))
    needs = common_module_needs()
    missing: dict[str, set[str]] = {}
    for path in package.files():
        for module in imported_modules(path):
            if module in needs:
                for distribution in needs[module]:
                    if not covered(distribution, available):
                        missing.setdefault(module, set()).add(distribution)
    assert not missing, (
        f"{name} imports modules of orders-common whose distributions it does not get "
        f"(ask for the extra that declares them: orders-common[...]): {missing}"
    )


def test_orders_common_declares_what_each_module_imports_in_its_core_or_an_extra() -> None:
    common = packages()[COMMON]
    declared = set(common.dependencies).union(*common.extras.values())
    missing = {
        module: {d for d in needs if not covered(d, declared)}
        for module, needs in common_module_needs().items()
    }
    assert not {m: d for m, d in missing.items() if d}, "declare them in dependencies or an extra"


def test_orders_common_core_holds_only_what_its_core_modules_import() -> None:
    """Web, docs and Kafka stay optional: no extra's distribution is also a core dependency, and
    every core dependency is imported by a module that needs nothing beyond the core."""
    common = packages()[COMMON]
    core = set(common.dependencies)
    assert {"web", "kafka", "docs"} <= set(common.extras)
    for extra, members in common.extras.items():
        assert not members & core, f"orders-common[{extra}] repeats core dependencies: {members & core}"
    core_modules = [needs for needs in common_module_needs().values() if all(covered(d, core) for d in needs)]
    used = {name for needs in core_modules for d in needs for name in d.split("|")}
    assert core - used == set(), "core dependencies no core module imports: move them to an extra"


def test_the_checks_see_an_undeclared_import(tmp_path: Path) -> None:
    """The check can fail: an import of an installed but undeclared distribution is found."""
    sample = tmp_path / "sample.py"
    sample.write_text("def f():\n    import yaml\n    from orders_common import docs\n")
    api = packages()["orders-api"]
    needed = distributions(imported_modules(sample, "orders_api.sample"), api)
    assert "pyyaml" in needed
    assert not covered("pyyaml", set(api.dependencies))
    assert "orders_common.docs" in imported_modules(sample, "orders_api.sample")
    assert "swagger-ui-bundle-v2" in common_module_needs()["orders_common.docs"]
