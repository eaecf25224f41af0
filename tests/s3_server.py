"""A real S3-compatible server on 127.0.0.1 for the remote tests: moto's server mode.

It runs in a thread of the test process, keeps its buckets in memory and accepts any
credentials, so a test reaches it with made-up keys and nothing leaves the machine.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

# Made up for the test server, which accepts any; given to DVC the ways a user would.
ACCESS_KEY = "AKIAIMGPIPETESTKEY00"
SECRET_KEY = "imgpipe-test-secret-never-in-git"


@contextmanager
def s3_server() -> Iterator[str]:
    """Start the server on a free port; yield its endpoint URL."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def make_bucket(endpoint: str, name: str):
    """Create bucket ``name``; return a boto3 client of the server, to look inside it."""
    import boto3

    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        region_name="us-east-1",
    )
    client.create_bucket(Bucket=name)
    return client
