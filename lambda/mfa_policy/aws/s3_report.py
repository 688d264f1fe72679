"""Reports and run state in the report bucket, for runs in AWS.

Each slice writes its rows to a part of its own (``parts/00001.jsonl``, keyed by slice number,
so a retried slice overwrites its part instead of adding one); the last slice joins the parts
into ``users.jsonl`` and ``users.csv`` with a streamed multipart upload, and writes the summary.
"""

from __future__ import annotations

import io
import json
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from mfa_policy.core.report import (
    CSV_COLUMNS,
    RowsDigest,
    csv_text,
    jsonl_text,
    render_markdown,
    summary_document,
)

MULTIPART_CHUNK = 8 * 1024 * 1024  # S3 parts must be at least 5 MiB, except the last


class S3Report:
    def __init__(self, s3: Any, bucket: str, prefix: str, run_id: str, slice_number: int) -> None:
        self.s3 = s3
        self.bucket = bucket
        self.key_prefix = f"{prefix.rstrip('/')}/runs/{run_id}/".lstrip("/")
        self.slice_number = slice_number
        self._dir = Path(tempfile.mkdtemp(prefix="mfa-policy-report-"))
        self._jsonl = self._dir / "part.jsonl"

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key_prefix}"

    def sizes(self) -> dict[str, int]:
        return {"parts": self.slice_number}

    def truncate(self, sizes: Mapping[str, int]) -> None:
        """Rows of a slice that did not finish were never uploaded: nothing to drop."""

    def append(self, rows: list[dict[str, Any]]) -> None:
        with open(self._jsonl, "a", encoding="utf-8") as f:
            f.write(jsonl_text(rows))

    def flush_part(self) -> None:
        """Upload this slice's rows (an empty part too, so the part list has no holes)."""
        self._jsonl.touch()
        self.s3.upload_file(
            str(self._jsonl), self.bucket, f"{self.key_prefix}parts/{self.slice_number:05d}.jsonl"
        )

    def finish(self, summary: Mapping[str, Any]) -> None:
        self.flush_part()
        rows = self._join("users.jsonl", lambda line: line)
        self._join(
            "users.csv",
            lambda line: csv_text([json.loads(line)]),
            header=",".join(CSV_COLUMNS) + "\n",
        )
        document = summary_document(summary, rows)
        self._put("summary.md", render_markdown(document), "text/markdown")
        self._put(
            "summary.json",
            json.dumps(document, indent=2, sort_keys=True) + "\n",
            "application/json",
        )

    def _put(self, name: str, body: str, content_type: str) -> None:
        self.s3.put_object(
            Bucket=self.bucket,
            Key=self.key_prefix + name,
            Body=body.encode("utf-8"),
            ContentType=content_type,
        )

    def _part_lines(self) -> Iterator[str]:
        for number in range(1, self.slice_number + 1):
            key = f"{self.key_prefix}parts/{number:05d}.jsonl"
            body = self.s3.get_object(Bucket=self.bucket, Key=key)["Body"]
            for raw in body.iter_lines():
                if raw:
                    yield raw.decode("utf-8") + "\n"

    def _join(self, name: str, convert: Any, header: str = "") -> RowsDigest:
        """Stream the parts, converted line by line, into one object; the digest of its body."""
        key = self.key_prefix + name
        digest = RowsDigest()
        upload = self.s3.create_multipart_upload(Bucket=self.bucket, Key=key)
        parts: list[dict[str, Any]] = []
        buffer = io.BytesIO()
        buffer.write(header.encode("utf-8"))

        def send() -> None:
            response = self.s3.upload_part(
                Bucket=self.bucket,
                Key=key,
                UploadId=upload["UploadId"],
                PartNumber=len(parts) + 1,
                Body=buffer.getvalue(),
            )
            parts.append({"ETag": response["ETag"], "PartNumber": len(parts) + 1})
            buffer.seek(0)
            buffer.truncate()

        try:
            for line in self._part_lines():
                data = convert(line).encode("utf-8")
                digest.update(data)
                buffer.write(data)
                if buffer.tell() >= MULTIPART_CHUNK:
                    send()
            if buffer.tell() or not parts:
                send()
            self.s3.complete_multipart_upload(
                Bucket=self.bucket,
                Key=key,
                UploadId=upload["UploadId"],
                MultipartUpload={"Parts": parts},
            )
        except BaseException:
            self.s3.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload["UploadId"])
            raise
        return digest


class S3File:
    """One state file (the probe memory) kept in the bucket and used from /tmp."""

    def __init__(self, s3: Any, bucket: str, key: str, local: Path) -> None:
        self.s3 = s3
        self.bucket = bucket
        self.key = key
        self.local = local

    def download(self) -> None:
        self.local.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.s3.download_file(self.bucket, self.key, str(self.local))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchKey"):
                raise  # a first run has no file yet; anything else is a real problem

    def upload(self) -> None:
        if self.local.exists():
            self.s3.upload_file(str(self.local), self.bucket, self.key)


class S3Object:
    """One small object read and written whole (a run's group membership snapshot)."""

    def __init__(self, s3: Any, bucket: str, key: str) -> None:
        self.s3 = s3
        self.bucket = bucket
        self.key = key

    def load(self) -> bytes | None:
        try:
            body: bytes = self.s3.get_object(Bucket=self.bucket, Key=self.key)["Body"].read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey"):
                return None
            raise
        return body

    def save(self, data: bytes) -> None:
        self.s3.put_object(
            Bucket=self.bucket, Key=self.key, Body=data, ContentType="application/json"
        )


class S3JournalPages:
    """A run's write-intent journal in the bucket: ``journal/<run id>/<page>.jsonl``.

    Page numbers are zero-padded so that listing from a page on (``StartAfter``) finds exactly
    the pages a resumed slice may have to know about.
    """

    def __init__(self, s3: Any, bucket: str, prefix: str, run_id: str) -> None:
        self.s3 = s3
        self.bucket = bucket
        self.key_prefix = f"{prefix.rstrip('/')}/journal/{run_id}/".lstrip("/")

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key_prefix}"

    def _key(self, page: int) -> str:
        return f"{self.key_prefix}{page:08d}.jsonl"

    def put_page(self, page: int, text: str) -> None:
        self.s3.put_object(
            Bucket=self.bucket,
            Key=self._key(page),
            Body=text.encode("utf-8"),
            ContentType="application/x-ndjson",
        )

    def pages_from(self, page: int) -> Iterator[tuple[int, str]]:
        # StartAfter is exclusive; "<prefix>00000007" sorts before "<prefix>00000007.jsonl".
        kwargs: dict[str, Any] = {
            "Bucket": self.bucket,
            "Prefix": self.key_prefix,
            "StartAfter": f"{self.key_prefix}{page:08d}",
        }
        while True:
            listing = self.s3.list_objects_v2(**kwargs)
            for item in listing.get("Contents") or []:
                name = item["Key"][len(self.key_prefix) :].removesuffix(".jsonl")
                if not name.isdigit():
                    continue
                body = self.s3.get_object(Bucket=self.bucket, Key=item["Key"])["Body"]
                yield int(name), body.read().decode("utf-8")
            if not listing.get("IsTruncated"):
                return
            kwargs["ContinuationToken"] = listing["NextContinuationToken"]
