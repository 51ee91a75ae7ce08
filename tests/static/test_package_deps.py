"""Each package declares what it imports, and the packages of libs/ stay in their layers.

For every package under libs/, services/, tools/ and examples/, the imports of its src files (read with
`ast`, at any depth, standard library and the package itself left out) are mapped to the
distributions installed in this environment, and each must be declared in that package's
pyproject.toml, as a dependency or in one of its extras (orders-runtime's `tracing`: the SDK it
loads only when tracing is on). So an import nobody declared fails `make test`, not an image
build or a fresh install. The libs/ packages form layers (contract, runtime, readmodel and
kafka, web): none imports one above it, none imports a service, and the contract imports no
web, Redis, Kafka or token library at all.
"""

import ast
import gc
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
LAYERS = {
    "orders-contract": 0,
    "orders-runtime": 1,
    "orders-readmodel": 2,
    "orders-kafka": 2,
    "orders-web": 3,
}
"""The packages of libs/, each above the ones it may import."""

CONTRACT_NEVER = frozenset(
    {"fastapi", "starlette", "uvicorn", "redis", "hiredis", "aiokafka", "httpx", "pyjwt", "prometheus-client"}
)
"""What the contract imports none of (distributions)."""

LOADED_BY_NAME = frozenset({"uvloop", "httptools"})
"""Declared by orders-web though no module imports them: uvicorn loads them by name (`loop='uvloop'`,
`http='httptools'`)."""


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


def _parsed(path: Path) -> ast.Module:
    """The file's syntax tree, with the garbage collector held off while it is built: on
    CPython 3.11 a finalizer that warns during `ast.parse` (an unclosed socket another test
    left behind) breaks the parser's depth count and raises "SystemError: AST constructor
    recursion depth mismatch" (python/cpython#106905)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        return ast.parse(path.read_text(), str(path))
    finally:
        if enabled:
            gc.enable()


def imported_modules(path: Path, module: str | None = None) -> set[str]:
    """What a file imports, dotted and absolute, at any depth (in functions, in TYPE_CHECKING
    blocks); relative imports are resolved against the file's own package."""
    package = (module or module_name(path)).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    modules: set[str] = set()
    for node in ast.walk(_parsed(path)):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            name = ".".join([*base, *([node.module] if node.module else [])])
            modules.add(name)
            # `from orders_web import http` imports the module orders_web.http
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


def covered(distribution: str, declared: set[str]) -> bool:
    return any(name in declared for name in distribution.split("|"))


def declared(package: Package) -> set[str]:
    return set(package.dependencies).union(*package.extras.values())


def needed(package: Package) -> dict[str, set[str]]:
    """Distribution -> the files (and modules) of the package that import it."""
    found: dict[str, set[str]] = {}
    for path in package.files():
        for distribution, modules in distributions(imported_modules(path), package).items():
            found.setdefault(distribution, set()).update(f"{path.relative_to(ROOT)}: {m}" for m in modules)
    return found


def test_every_package_is_found() -> None:
    assert set(LAYERS) | {"orders-api", "orders-processor", "orders-query"} <= set(packages())
    for package in packages().values():
        assert package.imports, f"{package.folder} has no package under src/"
        assert any(True for _ in package.files())
    libs = {name for name, package in packages().items() if package.folder.parent.name == "libs"}
    assert libs == set(LAYERS), "every package of libs/ has its layer here"


@pytest.mark.parametrize("name", sorted(packages()))
def test_a_package_declares_every_distribution_it_imports(name: str) -> None:
    package = packages()[name]
    missing = {d: files for d, files in needed(package).items() if not covered(d, declared(package))}
    assert not missing, f"{name} imports distributions its pyproject.toml does not declare: {missing}"


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_a_lib_imports_only_libs_below_it_and_no_service(name: str) -> None:
    package = packages()[name]
    first = {d for d in needed(package) if d in packages()}
    above = {d for d in first if LAYERS.get(d, 99) >= LAYERS[name]}
    assert not above, f"{name} imports packages of its own layer or above (or a service): {above}"


def test_the_contract_imports_no_web_redis_kafka_or_token_library() -> None:
    contract = packages()["orders-contract"]
    names = {name for distribution in needed(contract) for name in distribution.split("|")}
    assert not names & CONTRACT_NEVER, names & CONTRACT_NEVER
    assert not set(contract.dependencies) & CONTRACT_NEVER


def test_a_lib_declares_only_what_it_imports() -> None:
    """No lib drags in a distribution none of its modules imports (each stays as small as it is)."""
    for name in LAYERS:
        package = packages()[name]
        used = {n for distribution in needed(package) for n in distribution.split("|")}
        unused = set(package.dependencies) - used - LOADED_BY_NAME
        assert not unused, f"{name} declares dependencies no module of it imports: {unused}"


def test_the_checks_see_an_undeclared_import(tmp_path: Path) -> None:
    """The check can fail: an import of an installed but undeclared distribution is found, and so is
    a contract module that imports the web toolkit."""
    sample = tmp_path / "sample.py"
    sample.write_text("def f():\n    import yaml\n    from orders_web import docs\n")
    api = packages()["orders-api"]
    found = distributions(imported_modules(sample, "orders_api.sample"), api)
    assert "pyyaml" in found
    assert not covered("pyyaml", set(api.dependencies))
    contract = packages()["orders-contract"]
    assert "orders-web" in distributions(imported_modules(sample, "orders_contract.sample"), contract)
