"""Build the Lambda package with bytecode, and check it really holds what it needs.

    python -m deploy.package     # `make vendor`: run it before `chalice deploy`

Lambda reads the package from a read-only file system, so a module shipped without
bytecode is compiled from source in every cold container. Chalice installs the packages of
requirements.txt by unpacking their wheels (never compiling them) together with every
dependency they declare, and it has no build hook; what is in `vendor/` it copies into the
zip as it is. So `requirements.txt` lists nothing, and this module installs the pinned,
complete `requirements-lambda.txt` for Lambda's platform into `vendor/` and compiles it, the
app and the two Chalice runtime files Chalice adds to checked-hash .pyc: Python checks each
against its source's hash, so a stale one is never used.

`chalice package` exits 0 even when it could not get a wheel for Lambda's platform (it
only prints "Could not install dependencies"), so its output is read, and the zip is
checked: every pin, every dependency a shipped package declares (bar LEFT_OUT), and a
valid checked-hash .pyc next to every module.
"""

import compileall
import hashlib
import importlib.util
import inspect
import py_compile
import re
import shutil
import subprocess
import sys
import zipfile
from email.parser import HeaderParser
from pathlib import Path

import chalice.app
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
REQUIREMENTS = ROOT / "requirements-lambda.txt"
VENDOR = ROOT / "vendor"
# The most `chalice deploy` uploads directly, and the headroom the package keeps below it.
ZIP_LIMIT_BYTES = 50 * 1024 * 1024
ZIP_HEADROOM_BYTES = 5 * 1024 * 1024
# Lambda's python3.11 runtime: CPython 3.11 on Amazon Linux 2 (glibc 2.26), x86_64.
LAMBDA_PYTHON = "3.11"
LAMBDA_PLATFORMS = [f"manylinux_2_{minor}_x86_64" for minor in range(17, 27)] + ["manylinux2014_x86_64"]
# Written last into vendor/: the digest of what it was built from.
BUILT_FROM = ".built-from"
# Declared by a shipped package, imported by no code path of the app (tests/test_package.py).
LEFT_OUT = {"numpy"}
# The two files of Chalice that `chalice package` adds to every zip, by their path in it.
CHALICE_RUNTIME = {"chalice/__init__.py": Path(inspect.getfile(chalice)),
                   "chalice/app.py": Path(inspect.getfile(chalice.app))}


class PackageError(RuntimeError):
    pass


def pinned_requirements() -> dict[str, str]:
    pins = {}
    for line in REQUIREMENTS.read_text().splitlines():
        if match := re.fullmatch(r"([A-Za-z0-9_.-]+)==(\S+)", line.strip()):
            pins[match[1]] = match[2]
    return pins


def build_vendor() -> None:
    """vendor/: the pinned requirements for Lambda's platform, with checked-hash bytecode.

    Built beside vendor/ and swapped in, so a failed build never leaves half a vendor/.
    """
    building = VENDOR.with_name("vendor.building")
    shutil.rmtree(building, ignore_errors=True)
    platforms = [argument for platform in LAMBDA_PLATFORMS for argument in ("--platform", platform)]
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         "--target", str(building), "--no-deps", "--no-compile", "--only-binary=:all:",
         "--implementation", "cp", "--python-version", LAMBDA_PYTHON, *platforms,
         "-r", str(REQUIREMENTS)],
        check=True,
    )
    # Console scripts: nothing in Lambda runs them.
    shutil.rmtree(building / "bin", ignore_errors=True)
    _compile(building)
    (building / BUILT_FROM).write_text(requirements_digest())
    shutil.rmtree(VENDOR, ignore_errors=True)
    building.rename(VENDOR)


def requirements_digest() -> str:
    """What vendor/ is built from: the pins and the platform."""
    return hashlib.sha256(f"{LAMBDA_PYTHON} {LAMBDA_PLATFORMS}\n".encode() + REQUIREMENTS.read_bytes()).hexdigest()


def vendor_is_current() -> bool:
    """vendor/ was built, whole, from the requirements as they are now (so `make deploy` run
    again rebuilds nothing)."""
    stamp = VENDOR / BUILT_FROM
    return stamp.exists() and stamp.read_text() == requirements_digest()


def compile_app() -> None:
    """Checked-hash .pyc for chalicelib/ (Chalice ships its __pycache__ as it is), and, in
    vendor/, for app.py and Chalice's runtime files, which Chalice ships without theirs."""
    _compile(ROOT / "chalicelib")
    for zip_path, source in {"app.py": ROOT / "app.py", **CHALICE_RUNTIME}.items():
        cached = Path(importlib.util.cache_from_source(zip_path))
        py_compile.compile(str(source), cfile=str(VENDOR / cached), doraise=True,
                           invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH)


def _compile(folder: Path) -> None:
    if not compileall.compile_dir(folder, quiet=1, force=True,
                                  invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH):
        raise PackageError(f"some modules under {folder} do not compile (see above)")


def build_package(out_dir: Path, stage: str = "dev") -> Path:
    """vendor/, then the checked deployment.zip; PackageError if it lacks anything or is too big."""
    build_vendor()
    compile_app()
    chalice = Path(sys.executable).parent / "chalice"
    result = subprocess.run([str(chalice), "package", "--stage", stage, str(out_dir)],
                            cwd=ROOT, capture_output=True, text=True)
    log = result.stdout + result.stderr
    if result.returncode or "Could not install dependencies" in log:
        raise PackageError(f"chalice package failed:\n{log}")
    archive = out_dir / "deployment.zip"
    with zipfile.ZipFile(archive) as package:
        problems = _missing_dependencies(package) + _missing_bytecode(package)
    if problems:
        raise PackageError("deployment.zip: " + "; ".join(problems))
    if archive.stat().st_size > ZIP_LIMIT_BYTES - ZIP_HEADROOM_BYTES:
        raise PackageError(f"deployment.zip is {archive.stat().st_size / 2**20:.1f} MiB, "
                           f"over {(ZIP_LIMIT_BYTES - ZIP_HEADROOM_BYTES) / 2**20:.0f} MiB")
    return archive


def _missing_dependencies(package: zipfile.ZipFile) -> list[str]:
    """Pins without their .dist-info, and dependencies of shipped packages that are absent."""
    metadata = {name: HeaderParser().parsestr(package.read(name).decode())
                for name in package.namelist() if re.fullmatch(r"[^/]+\.dist-info/METADATA", name)}
    shipped = {canonicalize_name(m["Name"]): m["Version"] for m in metadata.values()}
    problems = [f"lacks {name}=={version}" for name, version in pinned_requirements().items()
                if shipped.get(canonicalize_name(name)) != version]
    for m in metadata.values():
        for requirement in map(Requirement, m.get_all("Requires-Dist") or []):
            needed = requirement.marker is None or requirement.marker.evaluate({"extra": ""})
            name = canonicalize_name(requirement.name)
            if needed and name not in shipped and name not in LEFT_OUT:
                problems.append(f"lacks {requirement.name}, which {m['Name']} requires")
    return problems


def _missing_bytecode(package: zipfile.ZipFile) -> list[str]:
    """Modules without a checked-hash .pyc of exactly their source."""
    names = set(package.namelist())
    if len(names) != len(package.namelist()):
        return ["holds duplicate names"]
    stale = []
    for name in sorted(n for n in names if n.endswith(".py")):
        cached = importlib.util.cache_from_source(name)
        header = package.read(cached)[:16] if cached in names else b""
        # PEP 552 header: magic, flags (0b11: hash-based, checked), the source's hash.
        if header != (importlib.util.MAGIC_NUMBER + (3).to_bytes(4, "little")
                      + importlib.util.source_hash(package.read(name))):
            stale.append(name)
    return [f"{len(stale)} modules lack checked-hash bytecode of their source, e.g. {stale[:3]}"] if stale else []


if __name__ == "__main__":
    if vendor_is_current():
        print(f"vendor/: built from {REQUIREMENTS.name} as it is; not rebuilt")
    else:
        build_vendor()
    compile_app()
