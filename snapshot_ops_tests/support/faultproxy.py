"""A fault-injecting HTTP proxy the tests put in front of moto's server and Azurite.

It forwards every request unchanged to the real emulator, records what it saw and when (so
tests can count batch requests, check their Content-MD5 and count keys per second), and,
when a test asks, answers for the store: a status such as 503 for the next matching
requests (throttling, outages), a request held longer than the client waits (timeouts), a
connection closed without an answer, the store's real answer rewritten (e.g. one key's
result left out of it), or, for S3 DeleteObjects, a per-key `<Error>` for chosen keys while
the rest of the batch really goes to the store. Only the transport is faked; the SDKs and
the stores are real.
"""

from __future__ import annotations

import base64
import hashlib
import html
import http.client
import re
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

#: What a rewriting fault does to the store's answer: (seen, status, headers, body) -> new.
Rewrite = Callable[["Seen", int, dict[str, str], bytes], tuple[int, dict[str, str], bytes]]

S3_NS = "http://s3.amazonaws.com/doc/2006-03-01/"
_HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "content-length"}


@dataclass(frozen=True)
class Seen:
    """One request as the proxy received it."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    at: float = 0.0  # time.monotonic() when the proxy had read the whole request

    @property
    def is_s3_delete_objects(self) -> bool:
        return self.method == "POST" and "delete" in self.query.split("&")

    @property
    def is_blob_batch(self) -> bool:
        return self.method == "POST" and "comp=batch" in self.query

    def s3_delete_keys(self) -> list[str]:
        try:
            root = ET.fromstring(self.body)
        except ET.ParseError:  # a body no XML parser takes: read the keys as S3 would try to
            text = self.body.decode("utf-8", "replace")
            return [html.unescape(k) for k in re.findall(r"<Key>(.*?)</Key>", text, re.S)]
        return [k.text or "" for k in root.iter(f"{{{S3_NS}}}Key")]

    def blob_batch_names(self) -> list[str]:
        """The blob paths a Blob Batch deletes ([account/]container/name), in the order sent."""
        paths = re.findall(rb"\r\nDELETE /([^? ]+)", self.body)
        return [unquote(p.decode("ascii")) for p in paths]

    def content_md5_matches(self) -> bool:
        sent = self.headers.get("content-md5")
        return sent == base64.b64encode(hashlib.md5(self.body).digest()).decode()

    def blob_batch_deletes(self) -> int:
        return self.body.count(b"\r\nDELETE ")


@dataclass
class Fault:
    """Answer the next `times` requests that `match` with `status` and `body`.

    With a `delay` the proxy first holds the request that many seconds (a store that is
    slow to answer); a `status` of None then forwards it to the store as usual.
    """

    match: Callable[[Seen], bool]
    status: int | None
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    times: int = 1
    delay: float = 0.0
    #: Close the connection without answering (a connection error for the client).
    hang_up: bool = False
    #: With `status` None: forward to the store, then change its answer with this.
    rewrite: Rewrite | None = None


@dataclass
class KeyFault:
    """What the store answers about one key in the next `times` batch requests carrying it:
    an S3 `<Error>` entry with `code` and `message`, or an Azure sub-response with `status`
    and `code` (as `x-ms-error-code`). The key's object stays; once `times` is used up, the
    key goes to the store like any other."""

    code: str
    message: str = ""
    status: int = 503
    times: int = 1_000_000


class FaultProxy:
    """A threaded HTTP proxy on a free loopback port in front of `upstream` (host, port)."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.seen: list[Seen] = []
        self.faults: list[Fault] = []
        self.refused_s3_keys: set[str] = set()  # full keys DeleteObjects reports as errors
        #: Keys a batch answer fails on their own: S3 full keys, Azure "container/name".
        self.key_faults: dict[str, KeyFault] = {}
        self.in_flight = 0
        self.max_in_flight = 0  # most requests handled at once since the last reset
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass  # keep test output readable

            def _handle(self) -> None:
                with proxy._lock:
                    proxy.in_flight += 1
                    proxy.max_in_flight = max(proxy.max_in_flight, proxy.in_flight)
                try:
                    proxy._handle(self)
                finally:
                    with proxy._lock:
                        proxy.in_flight -= 1

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def reset(self) -> None:
        with self._lock:
            self.seen.clear()
            self.faults.clear()
            self.refused_s3_keys.clear()
            self.key_faults.clear()
            self.max_in_flight = 0

    def add_fault(self, fault: Fault) -> None:
        with self._lock:
            self.faults.append(fault)

    def requests(self, predicate: Callable[[Seen], bool]) -> list[Seen]:
        with self._lock:
            return [s for s in self.seen if predicate(s)]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    # -- request handling -------------------------------------------------------------------

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        parts = urlsplit(handler.path)
        seen = Seen(
            handler.command,
            unquote(parts.path),
            parts.query,
            {k.lower(): v for k, v in handler.headers.items()},
            body,
            time.monotonic(),
        )
        with self._lock:
            self.seen.append(seen)
            fault = next((f for f in self.faults if f.times > 0 and f.match(seen)), None)
            if fault is not None:
                fault.times -= 1
            key_faults = self._take_key_faults(seen) if fault is None else {}
        if fault is not None and fault.delay:
            time.sleep(fault.delay)
        if fault is not None and fault.hang_up:
            handler.close_connection = True
            return
        if fault is not None and fault.status is not None:
            self._reply(handler, fault.status, fault.headers, fault.body)
            return
        headers = {k: v for k, v in handler.headers.items() if k.lower() not in _HOP_HEADERS}
        if key_faults and seen.is_s3_delete_objects:
            self._delete_objects_with_refusals(handler, seen, headers, key_faults)
            return
        if key_faults:  # a Blob Batch: its sub-requests for these blobs fail at the store
            body = _spoil_subrequests(seen, key_faults)
        status, reply_headers, reply = self._forward(handler.command, handler.path, headers, body)
        if key_faults:
            reply = _blob_subresponses_as(seen, status, reply_headers, reply, key_faults)
        if fault is not None and fault.rewrite is not None:
            status, reply_headers, reply = fault.rewrite(seen, status, reply_headers, reply)
        self._reply(handler, status, reply_headers, reply)

    def _take_key_faults(self, seen: Seen) -> dict[str, KeyFault]:
        """The key faults `seen` (a batch request) meets, each use counted; under the lock."""
        if seen.is_s3_delete_objects:
            keys = seen.s3_delete_keys()
            found = {k: KeyFault("AccessDenied", "Access Denied") for k in self.refused_s3_keys}
        elif seen.is_blob_batch:
            keys, found = seen.blob_batch_names(), {}
        else:
            return {}
        for key in keys:
            # Azurite puts its account first in a blob's path: "account/container/name".
            blob = key.split("/", 1)[1] if seen.is_blob_batch and "/" in key else key
            fault = self.key_faults.get(key) or self.key_faults.get(blob)
            if fault is not None and fault.times > 0:
                fault.times -= 1
                found[key] = fault
        return {k: f for k, f in found.items() if k in keys}

    def _forward(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection(*self.upstream, timeout=60)
        try:
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            reply = response.read()
            # A HEAD reply has no body but must keep the object's Content-Length.
            dropped = _HOP_HEADERS - {"content-length"} if method == "HEAD" else _HOP_HEADERS
            reply_headers = {k: v for k, v in response.getheaders() if k.lower() not in dropped}
            return response.status, reply_headers, reply
        finally:
            conn.close()

    def _delete_objects_with_refusals(
        self,
        handler: BaseHTTPRequestHandler,
        seen: Seen,
        headers: dict[str, str],
        refused: dict[str, KeyFault],
    ) -> None:
        """Send the batch without the refused keys; report those as per-key errors."""
        ET.register_namespace("", S3_NS)
        request = ET.fromstring(seen.body)
        blocked = []
        for obj in list(request.findall(f"{{{S3_NS}}}Object")):
            key = obj.findtext(f"{{{S3_NS}}}Key") or ""
            if key in refused:
                request.remove(obj)
                blocked.append(key)
        if request.findall(f"{{{S3_NS}}}Object"):
            body = ET.tostring(request, xml_declaration=True, encoding="utf-8")
            # The body changed: give it its own MD5, drop the client's CRC of the old one.
            headers = {
                k: v for k, v in headers.items() if not k.lower().startswith("x-amz-checksum")
            }
            headers["Content-MD5"] = base64.b64encode(hashlib.md5(body).digest()).decode()
            status, reply_headers, reply = self._forward("POST", handler.path, headers, body)
            if status != 200:
                self._reply(handler, status, reply_headers, reply)
                return
            result = ET.fromstring(reply)
        else:
            reply_headers = {"Content-Type": "application/xml"}
            result = ET.Element(f"{{{S3_NS}}}DeleteResult")
        for key in blocked:
            error = ET.SubElement(result, f"{{{S3_NS}}}Error")
            ET.SubElement(error, f"{{{S3_NS}}}Key").text = key
            ET.SubElement(error, f"{{{S3_NS}}}Code").text = refused[key].code
            ET.SubElement(error, f"{{{S3_NS}}}Message").text = refused[key].message
        reply = ET.tostring(result, xml_declaration=True, encoding="utf-8")
        self._reply(handler, 200, reply_headers, reply)

    @staticmethod
    def _reply(
        handler: BaseHTTPRequestHandler, status: int, headers: dict[str, str], body: bytes
    ) -> None:
        try:
            handler.send_response(status)
            for key, value in headers.items():
                handler.send_header(key, value)
            if not any(k.lower() == "content-length" for k in headers):
                handler.send_header("Content-Length", str(len(body)))
            handler.end_headers()
            if handler.command != "HEAD":
                handler.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            # The client gave up first (a timeout test): nobody is left to answer.
            handler.close_connection = True


# -- answers rewritten -------------------------------------------------------------------------


#: A Blob Batch sub-request's request line: its path (account first on Azurite) without the
#: last character, that character, and what follows the path.
_SUBREQUEST = re.compile(rb"\r\nDELETE /([^? ]*)([^? /])([? ])")


def _spoil_subrequests(seen: Seen, faults: dict[str, KeyFault]) -> bytes:
    """The Blob Batch body with the sub-requests for the faulted blobs changed so that the
    store refuses them: the last character of each path is replaced, which breaks that
    sub-request's signature (the store answers 403 and deletes nothing). The body keeps its
    length, so the outer request's signature (which covers Content-Length) still holds."""
    body = bytearray(seen.body)
    for match in _SUBREQUEST.finditer(seen.body):
        if unquote((match.group(1) + match.group(2)).decode("ascii")) in faults:
            body[match.start(2)] = ord("~") if match.group(2) != b"~" else ord("_")
    return bytes(body)


def _blob_subresponses_as(
    seen: Seen, status: int, headers: dict[str, str], body: bytes, faults: dict[str, KeyFault]
) -> bytes:
    """The Blob Batch answer with each faulted blob's sub-response (found by its Content-ID,
    the blob's position in the request) given the fault's status and error code."""
    if status != 202:
        return body
    content_type = next(v for k, v in headers.items() if k.lower() == "content-type")
    boundary = b"--" + content_type.split("boundary=", 1)[1].strip().encode()
    names = seen.blob_batch_names()
    parts = body.split(boundary)
    for path, fault in faults.items():
        content_id = f"Content-ID: {names.index(path)}\r\n".encode()
        [index] = [i for i, part in enumerate(parts) if content_id in part]
        part = re.sub(rb"\r\nx-ms-error-code: [^\r\n]*", b"", parts[index], flags=re.IGNORECASE)
        status_line = f"HTTP/1.1 {fault.status} {fault.message or fault.code}\r\n"
        parts[index] = re.sub(
            rb"HTTP/1\.1 \d{3} [^\r\n]*\r\n",
            (status_line + f"x-ms-error-code: {fault.code}\r\n").encode(),
            part,
            count=1,
        )
    return boundary.join(parts)


def s3_error(
    match: Callable[[Seen], bool], status: int, code: str, message: str, times: int = 1
) -> Fault:
    """A fault answering `status` with an S3 error document, as S3 writes them."""
    body = f"<Error><Code>{code}</Code><Message>{message}</Message></Error>".encode()
    return Fault(match, status, body, {"Content-Type": "application/xml"}, times=times)


def azure_error(match: Callable[[Seen], bool], status: int, code: str, times: int = 1) -> Fault:
    """A fault answering `status` with the error code header Azure Storage sends."""
    return Fault(match, status, b"", {"x-ms-error-code": code}, times=times)


def _s3_delete_answer(edit: Callable[[ET.Element], None]) -> Rewrite:
    """A rewrite that applies `edit` to the XML root of a successful DeleteObjects answer."""

    def rewrite(
        seen: Seen, status: int, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        if status != 200:
            return status, headers, body
        ET.register_namespace("", S3_NS)
        root = ET.fromstring(body)
        edit(root)
        return status, headers, ET.tostring(root, xml_declaration=True, encoding="utf-8")

    return rewrite


def _s3_entries(root: ET.Element, tag: str, full_key: str) -> list[ET.Element]:
    """The answer's `<tag>` entries (Deleted or Error) for `full_key`."""
    entries = root.findall(f"{{{S3_NS}}}{tag}")
    return [e for e in entries if e.findtext(f"{{{S3_NS}}}Key") == full_key]


def without_s3_result(full_key: str) -> Rewrite:
    """Leave `full_key`'s `<Deleted>` or `<Error>` entry out of a DeleteObjects answer."""

    def edit(root: ET.Element) -> None:
        for tag in ("Deleted", "Error"):
            for entry in _s3_entries(root, tag, full_key):
                root.remove(entry)

    return _s3_delete_answer(edit)


def s3_result_as_error(full_key: str, code: str, message: str) -> Rewrite:
    """Answer `full_key` in a DeleteObjects answer with an `<Error>` of `code` instead of its
    `<Deleted>` entry (as an S3-compatible store may, e.g. NoSuchKey for a missing key)."""

    def edit(root: ET.Element) -> None:
        for entry in _s3_entries(root, "Deleted", full_key):
            root.remove(entry)
            error = ET.SubElement(root, f"{{{S3_NS}}}Error")
            for tag, text in (("Key", full_key), ("Code", code), ("Message", message)):
                ET.SubElement(error, f"{{{S3_NS}}}{tag}").text = text

    return _s3_delete_answer(edit)


def without_blob_subresponse(blob_path: str) -> Rewrite:
    """Leave the sub-response for `blob_path` (container/name) out of a Blob Batch answer.

    The SDK numbers a batch's sub-requests 0, 1, ... in `Content-ID`; the service answers
    each with the same `Content-ID`, which finds the part to drop.
    """

    def rewrite(
        seen: Seen, status: int, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        # Azurite puts its account name first in the path; Azure has it in the host.
        found = [
            i for i, n in enumerate(seen.blob_batch_names()) if f"/{n}".endswith(f"/{blob_path}")
        ]
        if status != 202 or not found:
            return status, headers, body
        content_type = next(v for k, v in headers.items() if k.lower() == "content-type")
        boundary = b"--" + content_type.split("boundary=", 1)[1].strip().encode()
        content_id = f"Content-ID: {found[0]}\r\n".encode()
        parts = body.split(boundary)
        kept = [p for p in parts if content_id not in p]
        assert len(kept) == len(parts) - 1, "the answer has no sub-response to drop"
        return status, headers, boundary.join(kept)

    return rewrite
