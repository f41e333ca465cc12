"""URIs (local paths or `s3://bucket/key`), their filesystems, and atomic writes.

Every input and output of the pipeline is a URI string. Local paths may be relative (made
absolute against the current directory) or `file://...`; `s3://` goes to AWS S3 or to an
S3-compatible store when an endpoint is configured (argument, else `AWS_ENDPOINT_URL_S3`,
else `AWS_ENDPOINT_URL`). Credentials always come from the standard AWS chain
(environment, `~/.aws`, instance metadata) and are never logged: every message that may
carry a URI or a store's error text goes through `redact` first.

Atomic writes: a local file is written to a hidden temporary name in the same folder and
renamed over the target (rename is atomic on POSIX); an S3 object is sent in one PutObject
(boto3), which stores the whole body or nothing, so the bytes are built in memory first.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import os
import re
import shutil
import tempfile
import uuid
from typing import Iterator
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

S3_PREFIX = "s3://"
SECRET_ENV = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY_ID")
_SECRET_PARAM = re.compile(
    r"(?i)\b(secret_key|access_key|session_token|aws_secret_access_key|aws_access_key_id|"
    r"aws_session_token|x-amz-signature|x-amz-credential|x-amz-security-token|signature|"
    r"awsaccesskeyid)=([^&\s'\"]+)"
)
_USERINFO = re.compile(r"([a-z][a-z0-9+.-]*://)[^/@\s]+@", re.IGNORECASE)


def redact(text: str) -> str:
    """`text` with credentials removed: values of the AWS secret variables set in this
    process, `key=value` query parameters that name a secret, and `user:pass@` in URLs."""
    text = str(text)
    for name in SECRET_ENV:
        value = os.environ.get(name, "")
        if len(value) >= 4:
            text = text.replace(value, "***")
    text = _SECRET_PARAM.sub(lambda m: f"{m.group(1)}=***", text)
    return _USERINFO.sub(r"\1***@", text)


def has_userinfo(uri: str) -> bool:
    """True for `scheme://user[:password]@...` (credentials written into a URI)."""
    scheme, sep, rest = str(uri).partition("://")
    return bool(sep) and "@" in rest.split("/", 1)[0]


def is_s3(uri: str) -> bool:
    return str(uri).startswith(S3_PREFIX)


def normalize(uri: str) -> str:
    """`s3://...` unchanged (trailing slash dropped); local paths made absolute."""
    uri = str(uri)
    if is_s3(uri):
        return uri.rstrip("/") or uri
    if uri.startswith("file://"):
        uri = uri[len("file://"):]
    return os.path.abspath(os.path.expanduser(uri))


def join(base: str, *parts: str) -> str:
    """Join URI components with '/' (local paths: os.path.join)."""
    if is_s3(base):
        out = base.rstrip("/")
        for p in parts:
            out = f"{out}/{p.strip('/')}"
        return out
    return os.path.join(normalize(base), *parts)


def parent(uri: str) -> str:
    """The folder holding `uri` (`s3://b/a/x.txt` -> `s3://b/a`)."""
    if is_s3(uri):
        head, _, _ = uri.rstrip("/").rpartition("/")
        return head if len(head) > len("s3:/") else uri
    return os.path.dirname(normalize(uri))


def basename(uri: str) -> str:
    return uri.rstrip("/").rpartition("/")[2]


def endpoint_from_env() -> str | None:
    """The S3 endpoint override of the standard AWS variables, if any."""
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def _region() -> str | None:
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")


def _credential_key() -> int:
    """Changes when the credentials in the environment change (so caches refresh)."""
    return hash(tuple(os.environ.get(k, "") for k in SECRET_ENV))


@functools.lru_cache(maxsize=8)
def _s3_client(endpoint: str | None, region: str | None, credential_key: int):
    del credential_key
    import boto3  # only S3 writes need it

    if endpoint:
        region = region or "us-east-1"
    return boto3.client("s3", endpoint_url=endpoint or None, region_name=region)


def _boto3_s3(endpoint: str | None, region: str | None):
    return _s3_client(endpoint, region, _credential_key())


@functools.lru_cache(maxsize=8)
def _s3(endpoint: str | None, region: str | None, credential_key: int) -> pafs.S3FileSystem:
    # credential_key only makes the cache notice changed credentials; it is never shown.
    del credential_key
    kwargs: dict = {}
    if endpoint:
        parsed = urlparse(endpoint if "://" in endpoint else f"https://{endpoint}")
        kwargs.update(endpoint_override=parsed.netloc, scheme=parsed.scheme or "https")
        region = region or "us-east-1"  # S3-compatible stores ignore it; AWS SDK needs one
    if region:
        kwargs["region"] = region
    return pafs.S3FileSystem(**kwargs)


def filesystem_for(uri: str, *, endpoint: str | None = None) -> tuple[pafs.FileSystem, str]:
    """(pyarrow filesystem, path inside it) for a URI.

    S3: path is `bucket/key`; the endpoint override is `endpoint`, else AWS_ENDPOINT_URL(_S3);
    credentials come from the standard chain (pyarrow's AWS SDK). Local: absolute path.
    """
    uri = normalize(uri)
    if is_s3(uri) and has_userinfo(uri):
        raise ValueError(f"{redact(uri)}: credentials in an s3:// URI are not supported "
                         "(use the AWS chain: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or ~/.aws)")
    if is_s3(uri):
        return _s3(endpoint or endpoint_from_env(), _region(), _credential_key()), uri[len(S3_PREFIX):]
    return pafs.LocalFileSystem(), uri


def exists(uri: str, *, endpoint: str | None = None) -> bool:
    fs, path = filesystem_for(uri, endpoint=endpoint)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def file_size(uri: str, *, endpoint: str | None = None) -> int:
    """Size in bytes; raises FileNotFoundError naming the (redacted) URI."""
    fs, path = filesystem_for(uri, endpoint=endpoint)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        raise FileNotFoundError(f"no such file: {redact(uri)}")
    if info.type != pafs.FileType.File:
        raise IsADirectoryError(f"not a file: {redact(uri)}")
    return int(info.size)


def read_bytes(uri: str, *, endpoint: str | None = None) -> bytes:
    fs, path = filesystem_for(uri, endpoint=endpoint)
    try:
        with fs.open_input_stream(path) as f:
            return f.read()
    except FileNotFoundError:
        raise FileNotFoundError(f"no such file: {redact(uri)}") from None


def read_json(uri: str, *, endpoint: str | None = None):
    return json.loads(read_bytes(uri, endpoint=endpoint))


def write_bytes_atomic(uri: str, data: bytes, *, endpoint: str | None = None) -> None:
    """Write `data` so that readers see either the old object or the complete new one."""
    fs, path = filesystem_for(uri, endpoint=endpoint)
    if not is_s3(uri):
        folder = os.path.dirname(path)
        os.makedirs(folder, exist_ok=True)
        tmp = os.path.join(folder, f".{os.path.basename(path)}.tmp-{uuid.uuid4().hex}")
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.remove(tmp)
        return
    # One PutObject: S3 stores the whole body or nothing (a multipart stream that fails
    # half-way could be completed with partial parts by a destructor).
    bucket, _, key = path.partition("/")
    _boto3_s3(endpoint or endpoint_from_env(), _region()).put_object(Bucket=bucket, Key=key, Body=data)


def write_json_atomic(uri: str, obj, *, endpoint: str | None = None) -> None:
    write_bytes_atomic(uri, json.dumps(obj, indent=1, sort_keys=True).encode(), endpoint=endpoint)


def table_to_parquet_bytes(table: pa.Table, *, compression: str = "zstd") -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression=compression)
    return sink.getvalue().to_pybytes()


def write_table_atomic(uri: str, table: pa.Table, *, compression: str = "zstd",
                       endpoint: str | None = None) -> int:
    """Write a Parquet file atomically; returns its size in bytes."""
    data = table_to_parquet_bytes(table, compression=compression)
    write_bytes_atomic(uri, data, endpoint=endpoint)
    return len(data)


def read_table(uri: str, *, columns: list[str] | None = None, filters=None,
               endpoint: str | None = None) -> pa.Table:
    fs, path = filesystem_for(uri, endpoint=endpoint)
    return pq.read_table(path, filesystem=fs, columns=columns, filters=filters)


def list_dir(uri: str, *, suffix: str = "", endpoint: str | None = None) -> list[str]:
    """Names of the files directly in folder `uri` ending in `suffix`, sorted.

    Hidden names (leading '.', e.g. temporary files of unfinished writes) are left out.
    A missing folder lists as empty.
    """
    fs, path = filesystem_for(uri, endpoint=endpoint)
    selector = pafs.FileSelector(path, recursive=False, allow_not_found=True)
    names = [
        info.base_name
        for info in fs.get_file_info(selector)
        if info.type == pafs.FileType.File
    ]
    return sorted(n for n in names if n.endswith(suffix) and not n.startswith("."))


def delete(uri: str, *, endpoint: str | None = None) -> None:
    """Delete a file; a missing file is not an error."""
    fs, path = filesystem_for(uri, endpoint=endpoint)
    with contextlib.suppress(FileNotFoundError):
        fs.delete_file(path)


def delete_hidden(folder: str, *, endpoint: str | None = None) -> int:
    """Remove leftover temporary files (hidden names) of writes that were killed; returns
    how many. Local only: S3 has no partial objects (an unfinished multipart upload is
    invisible; a bucket lifecycle rule reaps those)."""
    if is_s3(folder):
        return 0
    path = normalize(folder)
    if not os.path.isdir(path):
        return 0
    removed = 0
    for name in os.listdir(path):
        if name.startswith(".") and ".tmp-" in name:
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(path, name))
                removed += 1
    return removed


def download(uri: str, local: str, *, endpoint: str | None = None, chunk: int = 8 << 20) -> None:
    """Copy `uri` to the local file `local` (streamed in chunks)."""
    fs, path = filesystem_for(uri, endpoint=endpoint)
    try:
        src = fs.open_input_stream(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"no such file: {redact(uri)}") from None
    with src, open(local, "wb") as out:
        shutil.copyfileobj(src, out, chunk)


@contextlib.contextmanager
def download_to_temp(uri: str, *, dir: str | None = None, endpoint: str | None = None) -> Iterator[str]:
    """A local path holding the bytes of `uri`, removed on exit.

    Local URIs are yielded as they are (no copy). decord needs a real path: a file-like
    input makes it copy the whole file into memory anyway.
    """
    if not is_s3(uri):
        yield normalize(uri)
        return
    fd, local = tempfile.mkstemp(prefix="mgtc-", suffix=os.path.splitext(basename(uri))[1][:16], dir=dir)
    os.close(fd)
    try:
        download(uri, local, endpoint=endpoint)
        yield local
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(local)


def open_text(uri: str, *, endpoint: str | None = None) -> io.StringIO:
    """A text manifest or config, decoded as UTF-8 with undecodable bytes kept as
    surrogates (so one bad line can be reported instead of failing the whole file)."""
    return io.StringIO(read_bytes(uri, endpoint=endpoint).decode("utf-8", "surrogateescape"))
