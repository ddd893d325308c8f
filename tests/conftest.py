"""Shared fixtures: small MovieLens-shaped data made on the spot, never downloaded."""

import logging
from pathlib import Path

import pytest

from benchmarks.project_copy import project_env
from movielens.synth.generate import generate_release


@pytest.fixture(scope="session")
def small_mirror(tmp_path_factory) -> Path:
    """A directory laid out like the GroupLens server: ml-latest-small.zip and its .md5, synthetic."""
    mirror = tmp_path_factory.mktemp("mirror")
    generate_release("ml-latest-small", 6000, 80, 160, seed=0, out_dir=mirror)
    return mirror


@pytest.fixture(scope="module")
def aws_env(small_mirror, tmp_path_factory) -> dict:
    """DVC's environment with dummy AWS credentials and no AWS files of this machine's user."""
    aws = tmp_path_factory.mktemp("aws")
    base = {k: v for k, v in project_env(small_mirror).items() if not k.startswith("AWS_")}
    return {
        **base,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": str(aws / "config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(aws / "credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }


@pytest.fixture(scope="module")
def s3_endpoint(request) -> str:
    """moto's S3 server on 127.0.0.1, a free port, with one bucket: the test module's BUCKET."""
    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    server = ThreadedMotoServer("127.0.0.1", 0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        boto3.client(
            "s3", endpoint_url=endpoint, region_name="us-east-1",
            aws_access_key_id="testing", aws_secret_access_key="testing",
        ).create_bucket(Bucket=request.module.BUCKET)  # fmt: skip
        yield endpoint
    finally:
        server.stop()
