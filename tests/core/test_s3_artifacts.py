"""Artifacts on S3 (s3fs) against moto's S3 server started here: round trips, resume, a kill mid-upload.

The server is moto's server mode, a local process on 127.0.0.1: nothing leaves the machine. Processes
find it the way a user points s3fs at any S3-compatible store: `AWS_ENDPOINT_URL` (botocore's standard
variable) or fsspec's `FSSPEC_S3_ENDPOINT_URL`; credentials come from the usual AWS variables.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from sqlalchemy import event, select

import kitaru_core
from kitaru_core import Client, checkpoint, flow, load, save
from kitaru_core import _tables as tables
from kitaru_core._runtime import get_store
from kitaru_core._serialization import JsonCodec
from kitaru_core.errors import StoreError
from tests._kill_inside import kill_when_inside

PREFIX = "kitaru"
DIGEST = re.compile(r"^[0-9a-f]{64}$")


@pytest.fixture(scope="session")
def moto_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """moto's S3 server in its own process on a free loopback port; yields its URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = tmp_path_factory.mktemp("moto") / "server.log"
    with open(log, "wb") as output:
        server = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2):
                break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                pytest.fail(f"moto's server did not start:\n{log.read_text(errors='replace')}")
            time.sleep(0.1)
    yield url
    server.terminate()
    server.wait(timeout=30)


@dataclass
class S3:
    endpoint: str
    bucket: str
    client: Any  # a boto3 S3 client: the checks never go through the code under test (s3fs)

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{PREFIX}"

    def key(self, digest: str) -> str:
        return f"{PREFIX}/{digest[:2]}/{digest}"

    def keys(self) -> list[str]:
        listed = self.client.list_objects_v2(Bucket=self.bucket)
        return sorted(item["Key"] for item in listed.get("Contents", []))

    def exists(self, digest: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self.key(digest))
        except self.client.exceptions.ClientError as error:
            if error.response["Error"]["Code"] in {"404", "NoSuchKey", "NotFound"}:
                return False
            raise
        return True

    def read(self, digest: str) -> bytes:
        return self.client.get_object(Bucket=self.bucket, Key=self.key(digest))["Body"].read()


AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


@pytest.fixture
def s3(moto_endpoint: str, shared_store: str, monkeypatch: pytest.MonkeyPatch) -> S3:
    """A fresh bucket on the moto server, configured as the artifact store of `shared_store`."""
    for name, value in {**AWS_ENV, "AWS_ENDPOINT_URL": moto_endpoint}.items():
        monkeypatch.setenv(name, value)
    client = boto3.client("s3", endpoint_url=moto_endpoint, **_credentials())
    bucket = f"kitaru-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=bucket)
    kitaru_core.configure(store_url=shared_store, artifacts_url=f"s3://{bucket}/{PREFIX}", reset=True)
    return S3(moto_endpoint, bucket, client)


def _credentials() -> dict[str, str]:
    return {
        "aws_access_key_id": AWS_ENV["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": AWS_ENV["AWS_SECRET_ACCESS_KEY"],
        "region_name": AWS_ENV["AWS_DEFAULT_REGION"],
    }


def _references() -> list[str]:
    """Every artifact reference a row of the store holds: outputs of executions and calls, saved artifacts."""
    columns = [
        tables.executions.c.output_ref,
        tables.checkpoint_calls.c.output_ref,
        tables.artifacts.c.value_ref,
    ]
    found: list[str] = []
    with get_store().engine.connect() as connection:
        for column in columns:
            found += [row[0] for row in connection.execute(select(column).where(column.is_not(None)))]
    return found


def _assert_every_reference_resolves(s3: S3) -> list[str]:
    references = _references()
    for digest in references:
        assert hashlib.sha256(s3.read(digest)).hexdigest() == digest
    return references


HUGE_BYTES = 4 * 1024 * 1024  # as in CHILD_SCRIPT


def _blob(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


# -- round trips, and the order of blob and row ------------------------------------------------------------


def test_large_outputs_and_named_artifacts_go_to_s3_and_come_back_exactly(s3: S3) -> None:
    store = get_store()
    assert store.artifacts.url == s3.url
    # Whenever a statement is about to write a digest-shaped value, note the ones with no object in
    # the bucket at that moment; such a value must never turn out to be an artifact reference.
    absent_when_written: set[str] = set()

    def before(_connection: Any, _cursor: Any, _statement: str, parameters: Any, *_args: Any) -> None:
        rows = parameters if isinstance(parameters, list) else [parameters]
        for row in rows:
            values = row.values() if isinstance(row, dict) else row or ()
            for value in values:
                if isinstance(value, str) and DIGEST.match(value) and not s3.exists(value):
                    absent_when_written.add(value)

    report = "# Report\n\n" + "ünïcode line\n" * 20_000  # about 260 KB of text
    data = _blob(3, 300_000)

    @checkpoint
    def make_blob(seed: int) -> bytes:
        return _blob(seed, 200_000)

    @checkpoint
    def make_table(rows: int) -> dict[str, list[float]]:
        return {f"row {index}": [index / 7, index * 1.5] for index in range(rows)}

    @flow(name="s3-round-trip")
    def round_trip() -> bytes:
        blob = make_blob(1)
        make_table(5000)
        assert save("report.md", report) == 1
        assert save("data", data) == 1
        return blob + make_blob(2)

    event.listen(store.engine, "before_cursor_execute", before)
    try:
        output = round_trip.run(execution_id="s3-round-trip")
    finally:
        event.remove(store.engine, "before_cursor_execute", before)

    assert output == _blob(1, 200_000) + _blob(2, 200_000)
    references = _assert_every_reference_resolves(s3)
    assert len(set(references)) == 6  # three call outputs, two artifacts, the flow's output
    assert s3.keys() == sorted(s3.key(digest) for digest in set(references))  # no temporary objects left
    assert absent_when_written.isdisjoint(references)  # each blob was complete before its row was written
    assert load("s3-round-trip", "report.md") == report
    assert load("s3-round-trip", "data") == data
    assert Client().get_output("s3-round-trip") == output
    detail = Client().get_execution("s3-round-trip")
    assert [call.name for call in detail.calls] == ["make_blob", "make_table", "make_blob"]

    again = round_trip.run(execution_id="s3-round-trip")  # completed: served from the store
    assert again == output


def test_a_missing_bucket_is_a_clear_store_error_and_is_not_created(s3: S3) -> None:
    missing = f"missing-{uuid.uuid4().hex[:12]}"
    kitaru_core.configure(artifacts_url=f"s3://{missing}/{PREFIX}")

    @checkpoint
    def large() -> bytes:
        return _blob(4, 100_000)

    @flow(name="no-bucket")
    def no_bucket() -> bytes:
        return large()

    with pytest.raises(
        StoreError, match=f"Cannot write artifact .* to s3://{missing}/kitaru: .*bucket does not exist"
    ):
        no_bucket.run(execution_id="no-bucket")
    assert missing not in [bucket["Name"] for bucket in s3.client.list_buckets()["Buckets"]]
    assert Client().get_execution("no-bucket").calls == []  # nothing refers to the value that was not stored


# -- a real process killed with SIGKILL ------------------------------------------------------------------

CHILD_SCRIPT = """
import hashlib
import os
import random
import signal
import sys
import time
from pathlib import Path

from kitaru_core import checkpoint, flow, save

BODIES = Path(sys.argv[1])
HUGE_BYTES = 4 * 1024 * 1024  # 5.3 MiB encoded: more than the 5 MiB block size the test gives s3fs, a multipart upload

if os.environ.get("KILL_POINT") == "upload":
    import s3fs.core

    complete = s3fs.core.S3File.commit

    def commit_after_a_pause(self):
        # every part is on the server now; the object appears only when the upload completes
        if self.mpu is not None:
            print("INSIDE", flush=True)
            time.sleep(120)
        return complete(self)

    s3fs.core.S3File.commit = commit_after_a_pause


def blob(seed, size):
    return random.Random(seed).randbytes(size)


@checkpoint(name="first")
def first() -> bytes:
    with BODIES.open("a", encoding="utf-8") as handle:
        handle.write("first\\n")
    return blob(1, 200_000)


@checkpoint(name="huge")
def huge() -> bytes:
    with BODIES.open("a", encoding="utf-8") as handle:
        handle.write("huge\\n")
    return blob(2, HUGE_BYTES)


@flow(name="uploads")
def uploads() -> str:
    a = first()
    version = save("a.bin", blob(3, 300_000))
    b = huge()
    if os.environ.get("KILL_POINT") == "after":
        print("INSIDE", flush=True)
        time.sleep(120)
    return f"{hashlib.sha256(a + b).hexdigest()} {version}"


if __name__ == "__main__":
    print("RESULT", uploads.run(execution_id=sys.argv[2]), flush=True)
"""


@pytest.mark.parametrize(
    "shared_store", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
@pytest.mark.parametrize("where", ["mid-upload", "after the call"])
def test_killed_runner_leaves_no_reference_to_a_missing_object_and_resumes(
    s3: S3, shared_store: str, tmp_path: Path, where: str
) -> None:
    script = tmp_path / "uploads.py"
    script.write_text(CHILD_SCRIPT, encoding="utf-8")
    bodies = tmp_path / "bodies.log"
    env = {
        **os.environ,
        "KITARU_STORE_URL": shared_store,
        "KITARU_ARTIFACTS_URL": s3.url,
        "KITARU_INTERACTIVE": "false",
        "KITARU_CONFIG_FILE": str(tmp_path / "none.toml"),
        "FSSPEC_S3_DEFAULT_BLOCK_SIZE": str(5 * 1024 * 1024),  # fsspec's own settings, as a user gives them
    }
    command = [sys.executable, str(script), str(bodies), "uploads-1"]
    kill_when_inside(
        command, env={**env, "KILL_POINT": "upload" if where == "mid-upload" else "after"}, cwd=tmp_path
    )

    huge_digest = hashlib.sha256(JsonCodec().encode(_blob(2, HUGE_BYTES))[1]).hexdigest()
    detail = Client().get_execution("uploads-1")
    assert detail.status == "running"
    references = _assert_every_reference_resolves(s3)  # no row names an object that is not there
    if where == "mid-upload":
        [upload] = s3.client.list_multipart_uploads(Bucket=s3.bucket)["Uploads"]  # cut off before completing
        assert upload["Key"] == s3.key(huge_digest)
        parts = s3.client.list_parts(Bucket=s3.bucket, Key=upload["Key"], UploadId=upload["UploadId"])
        assert sum(part["Size"] for part in parts["Parts"]) > HUGE_BYTES  # every byte was sent
        assert not s3.exists(huge_digest)
        assert [call.name for call in detail.calls] == ["first"]  # no record of the cut-off call
        assert huge_digest not in references
    else:
        assert [call.name for call in detail.calls] == ["first", "huge"]
        assert huge_digest in references

    # A fresh process resumes; this one finds the server through fsspec's variable instead of botocore's.
    resume_env = {key: value for key, value in env.items() if key != "AWS_ENDPOINT_URL"}
    resume_env["FSSPEC_S3_ENDPOINT_URL"] = s3.endpoint
    result = subprocess.run(
        command, env=resume_env, cwd=tmp_path, capture_output=True, text=True, timeout=180
    )
    assert result.returncode == 0, result.stderr
    expected = hashlib.sha256(_blob(1, 200_000) + _blob(2, HUGE_BYTES)).hexdigest()
    assert result.stdout.strip() == f"RESULT {expected} 1"  # read back from S3 byte for byte

    ran = bodies.read_text(encoding="utf-8").split()
    if where == "mid-upload":
        assert ran == ["first", "huge", "huge"]  # the cut-off call ran again; the completed one did not
    else:
        assert ran == ["first", "huge"]  # both served from S3 on resume
    detail = Client().get_execution("uploads-1")
    assert detail.status == "completed"
    assert [(call.name, call.status) for call in detail.calls] == [
        ("first", "completed"),
        ("huge", "completed"),
    ]
    references = _assert_every_reference_resolves(s3)
    assert huge_digest in references
    assert load("uploads-1", "a.bin") == _blob(3, 300_000)


# -- the production setup as docs/production.md deploys it ----------------------------------------------

JOBS_MODULE = """
import random
import signal

from kitaru_core import checkpoint, flow, save


@checkpoint
def build(seed: int) -> bytes:
    return random.Random(seed).randbytes(150_000)


@flow
def report(seed: int) -> int:
    data = build(seed)
    save("report.bin", data)
    return len(data)
"""


@pytest.mark.parametrize(
    "shared_store", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
def test_workers_run_as_the_production_docs_deploy_them_on_postgresql_and_s3(
    s3: S3, shared_store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import yaml

    markdown = (Path(__file__).resolve().parents[2] / "docs" / "production.md").read_text(encoding="utf-8")
    manifests = [
        document
        for block in re.findall(r"```yaml\n(.*?)```", markdown, flags=re.DOTALL)
        for document in yaml.safe_load_all(block)
    ]
    [deployment] = [item for item in manifests if item["metadata"]["name"] == "kitaru-worker"]
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["kitaru-adapters", "worker"]
    folder = tmp_path / "image"
    folder.mkdir()
    (folder / "jobs.py").write_text(JOBS_MODULE, encoding="utf-8")
    monkeypatch.syspath_prepend(str(folder))  # submitting checks that the entry point imports
    env = {
        **os.environ,
        "KITARU_STORE_URL": shared_store,
        "KITARU_ARTIFACTS_URL": s3.url,
        "KITARU_CONFIG_FILE": str(tmp_path / "none.toml"),
        "PYTHONPATH": str(folder),
    }
    ids = [Client().submit("jobs:report", seed, execution_id=f"report-{seed}") for seed in range(2)]
    logs = [tmp_path / f"worker-{index}.log" for index in range(2)]
    workers: list[subprocess.Popen[bytes]] = []
    try:
        for log in logs:  # two replicas of the Deployment
            with open(log, "wb") as output:
                workers.append(
                    subprocess.Popen(
                        [
                            sys.executable,
                            "-m",
                            "kitaru_core.cli",
                            *container["command"][1:],
                            *container["args"],
                        ],
                        cwd=folder,
                        env=env,
                        stdout=output,
                        stderr=subprocess.STDOUT,
                    )
                )
        deadline = time.monotonic() + 120
        while any(Client().get_execution(execution_id).status != "completed" for execution_id in ids):
            if time.monotonic() > deadline or any(worker.poll() is not None for worker in workers):
                pytest.fail(
                    "the workers did not complete the executions:\n"
                    + "\n".join(log.read_text(errors="replace") for log in logs)
                )
            time.sleep(0.2)
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        assert [worker.wait(timeout=60) for worker in workers] == [0, 0]
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    assert [Client().get_output(execution_id) for execution_id in ids] == [150_000] * 2
    for seed, execution_id in enumerate(ids):
        assert load(execution_id, "report.bin") == random.Random(seed).randbytes(150_000)
    references = _assert_every_reference_resolves(s3)
    assert len(set(references)) == 2  # each execution's call output and its artifact hold the same bytes
