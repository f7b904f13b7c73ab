"""A raw HTTP/1.1 upload client for the front door's tests and benchmark.

httpx and curl hide what matters here: how many bytes a client got to send before the
answer arrived, and an answer that comes while the client is still sending. This client
sends headers, then the body at a set pace, and watches for the answer between sends.
"""

from __future__ import annotations

import json
import select
import socket
import time
from dataclasses import dataclass

BOUNDARY = "front-door-test"
MULTIPART = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
# A valid start of an /embed form, so that the parser keeps reading what follows.
FILE_PART = (
    f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="audio"; filename="a.wav"\r\n'
    "Content-Type: audio/wav\r\n\r\n"
).encode()


@dataclass
class Answer:
    status: int | None
    headers: dict[str, str]
    body: bytes
    elapsed_s: float
    sent: int

    def json(self) -> dict[str, object]:
        return json.loads(self.body)  # type: ignore[no-any-return]


def read_answer(sock: socket.socket, buffer: bytes) -> tuple[int, dict[str, str], bytes]:
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(65536)
        if not chunk:
            break
        buffer += chunk
    head, _, body = buffer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return status, headers, body


def upload(
    port: int,
    headers: dict[str, str],
    *,
    total: int,
    rate_bps: float,
    chunk: int = 16 * 1024,
    chunked: bool = False,
    path: str = "/embed",
    give_up_s: float = 60.0,
    prefix: bytes = FILE_PART,
) -> Answer:
    """Send ``total`` body bytes at ``rate_bps`` (inf: as fast as the socket takes them)
    and return the answer as soon as it arrives, with how much had been sent by then."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=give_up_s)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
    head = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    head += [f"{k}: {v}" for k, v in headers.items()]
    head.append("Transfer-Encoding: chunked" if chunked else f"Content-Length: {total}")
    started = time.monotonic()
    sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
    sent = len(prefix)
    sock.sendall(b"%x\r\n%s\r\n" % (len(prefix), prefix) if chunked else prefix)
    buffer = b""
    payload = b"x" * chunk
    try:
        while time.monotonic() - started < give_up_s:
            readable, _, _ = select.select([sock], [], [], 0)
            if readable:
                break
            if sent >= total:
                select.select([sock], [], [], give_up_s)
                break
            piece = payload[: min(chunk, total - sent)]
            data = b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece
            _, writable, _ = select.select([], [sock], [], 0.05)
            if not writable:
                continue
            sock.sendall(data)
            sent += len(piece)
            if chunked and sent >= total:
                sock.sendall(b"0\r\n\r\n")
            if rate_bps != float("inf"):
                time.sleep(len(piece) / rate_bps)
        status, answer_headers, body = read_answer(sock, buffer)
    except (BrokenPipeError, ConnectionResetError):
        status, answer_headers, body = read_answer(sock, buffer)
    finally:
        elapsed = time.monotonic() - started
        sock.close()
    return Answer(status, answer_headers, body, elapsed, sent)
