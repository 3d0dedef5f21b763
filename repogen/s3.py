"""S3 locations and clients, shared by everything that talks to a bucket (remote cache, upload).

boto3 does the work: the usual credential chain, ``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_S3`` or
an explicit endpoint for S3-compatible stores, and botocore's own retries. This module only parses
``s3://BUCKET/PREFIX`` and turns botocore's exceptions into one clean :class:`RepogenError` line.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import email.utils
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from repogen.errors import RepogenError

#: S3's bucket naming rules (lower case, digits, dots, hyphens; 3 to 63 characters).
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


class S3Error(RepogenError):
    """A bucket could not be read or written: what, where, and what S3 said."""


@dataclass(frozen=True)
class S3Location:
    bucket: str
    prefix: str  # without leading or trailing '/'; '' for the bucket's root

    def key(self, *parts: str) -> str:
        """The object key for ``parts`` under the prefix."""
        return "/".join(p for p in (self.prefix, *parts) if p)

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"


def parse_url(url: str) -> S3Location:
    """``s3://BUCKET[/PREFIX]`` -> :class:`S3Location`; a :class:`ValueError` says what is wrong."""
    if not url.startswith("s3://"):
        raise ValueError(f"expected s3://BUCKET/PREFIX, found {url!r}")
    bucket, _, prefix = url[len("s3://"):].partition("/")
    if not _BUCKET.fullmatch(bucket) or ".." in bucket:
        raise ValueError(f"{bucket!r} is not a valid S3 bucket name (3-63 characters: a-z 0-9 . -)")
    prefix = prefix.strip("/")
    if any(part in ("", ".", "..") for part in prefix.split("/")) and prefix:
        raise ValueError(f"the prefix {prefix!r} has an empty, '.' or '..' component")
    if any(ord(c) < 32 or c == "\x7f" for c in prefix):
        raise ValueError("the prefix holds a control character")
    return S3Location(bucket, prefix)


def location(url: str) -> S3Location:
    """:func:`parse_url` for a command-line value: a bad URL is a clean usage error (exit 2)."""
    try:
        return parse_url(url)
    except ValueError as exc:
        error = RepogenError(str(exc))
        error.exit_code = 2
        raise error from None


def client(endpoint_url: str | None = None, *, max_pool: int = 32) -> Any:
    """A boto3 S3 client: standard retry mode, bounded timeouts, path-style addressing for endpoints
    (S3-compatible stores and moto rarely serve virtual-host names on 127.0.0.1)."""
    import boto3
    from botocore.config import Config

    config = Config(retries={"max_attempts": 5, "mode": "standard"}, connect_timeout=10, read_timeout=60,
                    max_pool_connections=max_pool, s3={"addressing_style": "path"},
                    # Checksums only when an operation requires them: S3-compatible stores differ.
                    request_checksum_calculation="when_required", response_checksum_validation="when_required")
    return boto3.session.Session().client("s3", endpoint_url=endpoint_url, config=config)


@dataclass(frozen=True)
class ObjectInfo:
    """One object of a listing: its key, ETag (as S3 sends it, quotes included) and size."""

    key: str
    etag: str
    size: int


class Fallback(Exception):
    """The :class:`SignedReader` met an answer it does not handle (an error, a redirect, a connection
    failure): the caller does the same through boto3's client, which retries, follows or explains it."""


#: Commercial AWS regions (``eu-west-1``...): their S3 endpoint is ``s3.<region>.amazonaws.com``.
_AWS_REGION = re.compile(r"(?!cn-|us-gov-|us-iso)[a-z]{2}(-[a-z]+)+-\d{1,2}")
_S3_XML = "{http://s3.amazonaws.com/doc/2006-03-01/}"


class SignedReader:
    """ListObjectsV2 and GetObject for read-only paths that must start fast (``plan --cache``).

    boto3's client costs ~0.15 s before its first request (the S3 service model and endpoint rules
    it loads); this uses only botocore's credential chain, its SigV4 signer and its HTTP session, on the
    same path-style URLs the client uses (:func:`client`). It does not retry, redirect or explain:
    any answer but the expected ones raises :class:`Fallback`.
    """

    def __init__(self, endpoint: str, region: str, credentials: Any, http: Any) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.region = region
        self._credentials = credentials
        self._http = http

    @classmethod
    def create(cls, endpoint_url: str | None = None) -> SignedReader | None:
        """A reader for the configured endpoint, or None when the configuration asks for what only the
        full client does (no credentials, FIPS or dual-stack endpoints, another partition, an ``s3``
        section in the profile, ``ignore_configured_endpoint_urls``)."""
        import os

        import botocore.session
        from botocore.configprovider import ConfiguredEndpointProvider
        from botocore.httpsession import URLLib3Session
        from botocore.utils import get_environ_proxies

        session = botocore.session.Session()
        credentials = session.get_credentials()
        if credentials is None or session.get_config_variable("ignore_configured_endpoint_urls"):
            return None
        if any(session.get_config_variable(v) for v in ("use_fips_endpoint", "use_dualstack_endpoint")):
            return None
        if session.get_scoped_config().get("s3"):
            return None
        region = session.get_config_variable("region")
        endpoint = endpoint_url or ConfiguredEndpointProvider(
            full_config=session.full_config, scoped_config=session.get_scoped_config(), client_name="s3").provide()
        if not endpoint:
            if not region or not _AWS_REGION.fullmatch(region):
                return None
            endpoint = f"https://s3.{region}.amazonaws.com"
        if not endpoint.startswith(("http://", "https://")):
            return None
        verify = session.get_config_variable("ca_bundle") or os.environ.get("REQUESTS_CA_BUNDLE") or True
        http = URLLib3Session(verify=verify, proxies=get_environ_proxies(endpoint), timeout=(10, 60))
        return cls(endpoint, region or "us-east-1", credentials, http)

    def _send(self, path: str, query: dict[str, str] | None = None) -> Any:
        from urllib.parse import quote

        from botocore.auth import S3SigV4Auth
        from botocore.awsrequest import AWSRequest

        url = self.endpoint + quote(path, safe="/~")
        if query:
            url += "?" + "&".join(f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in sorted(query.items()))
        request = AWSRequest(method="GET", url=url, headers={})
        S3SigV4Auth(self._credentials.get_frozen_credentials(), "s3", self.region).add_auth(request)
        try:
            return self._http.send(request.prepare())
        except Exception as exc:  # botocore's connection errors: the client retries and explains them
            raise Fallback(str(exc)) from exc

    def list(self, bucket: str, prefix: str, *, max_pages: int = 100) -> list[ObjectInfo]:
        """Every object under ``prefix`` (a page per 1,000 objects, at most ``max_pages`` pages)."""
        import xml.etree.ElementTree as ElementTree

        from botocore.compat import unquote_str  # how botocore decodes encoding-type=url keys

        found: list[ObjectInfo] = []
        query = {"list-type": "2", "prefix": prefix, "encoding-type": "url"}
        for _ in range(max_pages):
            response = self._send(f"/{bucket}", query)
            if response.status_code != 200:
                raise Fallback(f"listing answered HTTP {response.status_code}")
            try:
                root = ElementTree.fromstring(response.content)
                for item in root.iter(f"{_S3_XML}Contents"):
                    found.append(ObjectInfo(unquote_str(item.findtext(f"{_S3_XML}Key") or ""),
                                            item.findtext(f"{_S3_XML}ETag") or "",
                                            int(item.findtext(f"{_S3_XML}Size") or -1)))
            except (ElementTree.ParseError, ValueError) as exc:
                raise Fallback(f"unreadable listing ({exc})") from None
            token = root.findtext(f"{_S3_XML}NextContinuationToken")
            if root.findtext(f"{_S3_XML}IsTruncated") != "true" or not token:
                return found
            query = {**query, "continuation-token": token}
        raise Fallback(f"more than {max_pages} pages under {prefix}")

    def get(self, bucket: str, key: str) -> tuple[bytes, str] | None:
        """The object's bytes and ETag; None when it does not exist (deleted since a listing)."""
        response = self._send(f"/{bucket}/{key}")
        if response.status_code == 200:
            return bytes(response.content), str(response.headers.get("ETag", ""))
        if response.status_code == 404 and b"<Code>NoSuchKey</Code>" in response.content:
            return None
        raise Fallback(f"GET answered HTTP {response.status_code}")


def error_code(exc: BaseException) -> str | None:
    """S3's error code (``NoSuchKey``, ``PreconditionFailed``, ``404``...) or None if not from S3."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = response.get("Error", {}).get("Code")
        return str(code) if code is not None else None
    return None


def is_missing(exc: BaseException) -> bool:
    return error_code(exc) in ("NoSuchKey", "404", "NotFound")


def explain(exc: BaseException, where: S3Location | str, doing: str) -> S3Error:
    """One clean line for a failed S3 call: no credentials, unreachable endpoint, no bucket, denied."""
    from botocore import exceptions as bex

    if isinstance(exc, bex.NoCredentialsError | bex.PartialCredentialsError):
        return S3Error(f"{doing} {where}: no AWS credentials found",
                       hint="set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or an instance role")
    if isinstance(exc, bex.EndpointConnectionError | bex.ConnectTimeoutError | bex.ReadTimeoutError):
        return S3Error(f"{doing} {where}: cannot reach the S3 endpoint ({exc})",
                       hint="check AWS_ENDPOINT_URL / --endpoint-url and the network")
    code = error_code(exc)
    if code == "NoSuchBucket":
        return S3Error(f"{doing} {where}: the bucket does not exist")
    if code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
        return S3Error(f"{doing} {where}: access denied ({code})", hint="check the credentials and the bucket policy")
    return S3Error(f"{doing} {where}: {exc}")


# -- shared by upload and the bucket's gc (repogen/bucket.py, repogen/upload.py) ---------------------

NOT_FOUND = frozenset({"NoSuchKey", "404", "NotFound"})
#: A conditional write that lost (If-None-Match / If-Match), or S3's 409 for two racing ones.
PRECONDITION = frozenset({"PreconditionFailed", "412", "ConditionalRequestConflict", "409"})


def is_s3_url(text: str) -> bool:
    return text.startswith("s3://")


def relative(where: S3Location, key: str) -> str | None:
    """The path under the prefix of an object key, None when the key is outside it."""
    if not where.prefix:
        return key
    head = where.prefix + "/"
    return key[len(head):] if key.startswith(head) else None


def list_prefix(where: S3Location) -> str:
    """The ListObjectsV2 prefix for everything under the location."""
    return f"{where.prefix}/" if where.prefix else ""


def server_time(response: dict[str, Any]) -> dt.datetime | None:
    """The server's clock from a response's Date header (lock expiry and grace periods use it, not ours)."""
    date = response.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
    if not date:
        return None
    with contextlib.suppress(TypeError, ValueError):
        return email.utils.parsedate_to_datetime(date)
    return None


@contextlib.contextmanager
def errors(where: S3Location, doing: str) -> Iterator[None]:
    """Run S3 calls; any botocore failure leaves as one clean :class:`S3Error` line (see :func:`explain`)."""
    from botocore import exceptions as bex

    try:
        yield
    except (bex.BotoCoreError, bex.ClientError) as exc:
        raise explain(exc, where, doing) from None


def cloudfront_client() -> Any:
    """A CloudFront client (its endpoint is AWS's, or ``$AWS_ENDPOINT_URL_CLOUDFRONT``)."""
    import boto3
    from botocore.config import Config

    return boto3.session.Session().client(
        "cloudfront", config=Config(retries={"max_attempts": 5, "mode": "standard"}, connect_timeout=10,
                                    read_timeout=60))
