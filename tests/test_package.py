"""The Lambda zip that `chalice deploy` would upload: complete, and within 50 MiB.

Builds it with `chalice package`, which fetches Lambda-platform wheels from the
package registry (the only host a test here may reach).
"""

import zipfile

from bench.lambda_package import ZIP_LIMIT_BYTES, build_package


def test_the_package_holds_every_runtime_dependency_within_the_limit(tmp_path):
    archive = build_package(tmp_path)

    names = set(zipfile.ZipFile(archive).namelist())
    assert {"app.py", "chalicelib/chat.py", "chalicelib/history.py", "chalicelib/static/index.html"} <= names
    assert "langchain_aws/chat_models/sagemaker_endpoint.py" in names
    assert archive.stat().st_size <= ZIP_LIMIT_BYTES
    assert not any(name.startswith(("tests/", "local/", "infrastructure/", "bench/")) for name in names)

