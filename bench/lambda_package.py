"""Build the Lambda zip with `chalice package` and check it really holds what it needs.

`chalice package` exits 0 even when it could not get a wheel for Lambda's platform
(it only prints "Could not install dependencies"), so its output is read, and every
pinned requirement is looked for in the zip by its .dist-info folder.
"""

import re
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The most `chalice deploy` uploads directly.
ZIP_LIMIT_BYTES = 50 * 1024 * 1024


class PackageError(RuntimeError):
    pass


def pinned_requirements() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        if match := re.fullmatch(r"([A-Za-z0-9_.-]+)==(\S+)", line.strip()):
            pins[match[1]] = match[2]
    return pins


def _dist_info_name(name: str, version: str) -> str:
    return f"{re.sub(r'[-_.]+', '_', name).lower()}-{version}.dist-info"


def build_package(out_dir: Path, stage: str = "dev") -> Path:
    """The checked deployment.zip; PackageError if a dependency is missing or it is too big."""
    chalice = Path(sys.executable).parent / "chalice"
    result = subprocess.run([str(chalice), "package", "--stage", stage, str(out_dir)],
                            cwd=ROOT, capture_output=True, text=True)
    log = result.stdout + result.stderr
    if result.returncode or "Could not install dependencies" in log:
        raise PackageError(f"chalice package failed:\n{log}")
    archive = out_dir / "deployment.zip"
    folders = {name.split("/")[0].lower() for name in zipfile.ZipFile(archive).namelist()}
    missing = [f"{name}=={version}" for name, version in pinned_requirements().items()
               if _dist_info_name(name, version) not in folders]
    if missing:
        raise PackageError(f"deployment.zip lacks {', '.join(missing)}")
    if archive.stat().st_size > ZIP_LIMIT_BYTES:
        raise PackageError(f"deployment.zip is {archive.stat().st_size / 2**20:.1f} MiB, over 50 MiB")
    return archive
