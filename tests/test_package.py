"""The Lambda zip that `chalice deploy` would upload: complete, with bytecode, within budget.

Builds vendor/ and the zip as `make package` does, which fetches Lambda-platform wheels
from the package registry (the only host a test here may reach).
"""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from deploy.package import LEFT_OUT, ZIP_HEADROOM_BYTES, ZIP_LIMIT_BYTES, build_package

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    """The zip (build_package checks every pin, declared dependency and .pyc) and its files."""
    out = tmp_path_factory.mktemp("package")
    archive = build_package(out)
    unpacked = out / "unpacked"
    zipfile.ZipFile(archive).extractall(unpacked)
    return archive, unpacked


def test_the_package_holds_the_app_and_its_dependencies_with_bytecode_and_headroom(package):
    archive, _ = package

    names = set(zipfile.ZipFile(archive).namelist())
    assert {"app.py", "chalicelib/chat.py", "chalicelib/history.py", "chalicelib/static/index.html"} <= names
    assert {"langchain_aws/chat_models/sagemaker_endpoint.py",
            "langchain_aws/chat_models/__pycache__/sagemaker_endpoint.cpython-311.pyc",
            "__pycache__/app.cpython-311.pyc", "chalicelib/__pycache__/chat.cpython-311.pyc"} <= names
    assert archive.stat().st_size <= ZIP_LIMIT_BYTES - ZIP_HEADROOM_BYTES
    tooling = ("tests/", "local/", "infrastructure/", "bench/", "deploy/", "client/", "bin/")
    assert not any(name.startswith(tooling) for name in names)
    assert not any(name.split("/")[0] in LEFT_OUT for name in names)


def test_the_first_chat_imports_only_from_the_package(package):
    """Lambda's path: the package and the standard library, nothing of this venv."""
    _, unpacked = package
    check = (
        "import sys, sysconfig, app, chalicelib.chat\n"
        "stdlib = sysconfig.get_paths()['stdlib']\n"
        "outside = [name for name, module in sys.modules.items() if getattr(module, '__file__', None)\n"
        f"           and not module.__file__.startswith(({str(unpacked)!r}, stdlib))]\n"
        "assert not outside, outside\n"
    )

    subprocess.run([sys.executable, "-B", "-S", "-c", check], cwd=unpacked, check=True,
                   env={"PYTHONPATH": str(unpacked), "AWS_DEFAULT_REGION": "us-east-1"})


def test_no_code_path_of_the_app_imports_what_the_package_leaves_out():
    """The API tests (every route, every failure mapping, real LangChain and langchain-aws
    calls against the fake endpoint) pass in a fresh interpreter where LEFT_OUT cannot be
    imported, as in the package."""
    blocked = sorted(LEFT_OUT)
    run_tests = (
        "import sys\n"
        "class LeftOut:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        f"        if name.split('.')[0] in {blocked!r}:\n"
        "            raise ModuleNotFoundError(f'{name} is left out of the Lambda package', name=name)\n"
        "sys.meta_path.insert(0, LeftOut())\n"
        "import pytest\n"
        "sys.exit(pytest.main(['-q', '-p', 'no:cacheprovider', 'tests/test_api.py', 'tests/test_model_failures.py']))\n"
    )

    result = subprocess.run([sys.executable, "-c", run_tests], cwd=ROOT, capture_output=True, text=True)

    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert " passed" in result.stdout and "skipped" not in result.stdout
