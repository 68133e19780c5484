"""Raw-socket tus sink: the floor for any Python upload server (benchmark ceiling only).

One thread per connection, `recv_into` a reused 1 MiB buffer and `os.write` to the upload file.
It speaks just enough tus (POST/PATCH/HEAD with Content-Length) for the benchmark clients and
does no validation, no registry and no fsync.
usage: raw_sink.py PORT DIR
"""

from __future__ import annotations

import os
import socket
import sys
import threading

BUF = 1024 * 1024


def handle(conn: socket.socket, directory: str, counter: list[int], lock: threading.Lock) -> None:
    buf = bytearray(BUF)
    view = memoryview(buf)
    pending = b""
    with conn:
        while True:
            while b"\r\n\r\n" not in pending:
                data = conn.recv(65536)
                if not data:
                    return
                pending += data
            head, _, pending = pending.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            headers = {}
            for line in lines[1:]:
                key, _, value = line.partition(":")
                headers[key.strip().lower()] = value.strip()
            length = int(headers.get("content-length", "0") or 0)
            upload = target.rstrip("/").rsplit("/", 1)[-1]
            path = os.path.join(directory, upload)
            if method == "POST":
                with lock:
                    counter[0] += 1
                    upload = str(counter[0])
                open(os.path.join(directory, upload), "wb").close()
                host = headers.get("host", "127.0.0.1")
                reply = f"HTTP/1.1 201 Created\r\nLocation: http://{host}/files/{upload}\r\n"
                reply += "Tus-Resumable: 1.0.0\r\nContent-Length: 0\r\n\r\n"
                conn.sendall(reply.encode())
                pending = pending[length:]
            elif method == "PATCH":
                fd = os.open(path, os.O_WRONLY | os.O_APPEND)
                try:
                    first = pending[:length]
                    os.write(fd, first)
                    remaining = length - len(first)
                    pending = pending[len(first) :]
                    while remaining:
                        n = conn.recv_into(view, min(BUF, remaining))
                        if not n:
                            return
                        os.write(fd, view[:n])
                        remaining -= n
                    size = os.fstat(fd).st_size
                finally:
                    os.close(fd)
                reply = f"HTTP/1.1 204 No Content\r\nUpload-Offset: {size}\r\n"
                reply += "Tus-Resumable: 1.0.0\r\n\r\n"
                conn.sendall(reply.encode())
            else:
                size = os.path.getsize(path) if os.path.exists(path) else 0
                reply = f"HTTP/1.1 200 OK\r\nUpload-Offset: {size}\r\nUpload-Length: {size}\r\n"
                reply += "Tus-Resumable: 1.0.0\r\nContent-Length: 0\r\n\r\n"
                conn.sendall(reply.encode())


def main() -> None:
    port, directory = int(sys.argv[1]), sys.argv[2]
    os.makedirs(directory, exist_ok=True)
    counter, lock = [0], threading.Lock()
    sock = socket.create_server(("127.0.0.1", port), backlog=512)
    while True:
        conn, _ = sock.accept()
        args = (conn, directory, counter, lock)
        threading.Thread(target=handle, args=args, daemon=True).start()


if __name__ == "__main__":
    main()
