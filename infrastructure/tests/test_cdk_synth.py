"""`cdk synth` end to end, as a developer runs it: the pinned CLI, no AWS credentials, no network."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CDK = ROOT / "node_modules" / ".bin" / "cdk"


@pytest.mark.slow
def test_cdk_synth_works_offline_without_credentials(tmp_path):
    # A clean environment: with any credentials at all, even fake ones, the CLI asks STS for the
    # account. HOME moves so that no ~/.aws profile is found either.
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "AWS_EC2_METADATA_DISABLED": "true",
        "CDK_DISABLE_CLI_TELEMETRY": "true",
        "CDK_DISABLE_VERSION_CHECK": "true",
    }
    out = tmp_path / "cdk.out"
    # In a network namespace of its own (as root, where unshare may make one) there is no
    # network at all, so any attempt to reach a host would fail the synth.
    no_network = ["unshare", "--net"] if os.geteuid() == 0 and shutil.which("unshare") else []
    result = subprocess.run(
        no_network + [str(CDK), "synth", "--no-notices", "--debug", "--quiet", "--output", str(out)]
        + ["-c", "stage=e2e", "-c", "autoscaling=true"],
        cwd=ROOT / "infrastructure",
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert result.returncode == 0, result.stderr[-3000:]
    assert "Looking up default account ID from STS" not in result.stderr
    template = json.loads((out / "llama2-chatbot-e2e.template.json").read_text())
    types = {resource["Type"] for resource in template["Resources"].values()}
    assert {"AWS::SageMaker::Endpoint", "AWS::DynamoDB::Table", "AWS::ApplicationAutoScaling::ScalingPolicy"} <= types
    # cdk-nag (registered in app.py) lists a plugin here only when it has findings.
    report = json.loads((out / "validation-report.json").read_text())
    assert report["pluginReports"] == []
