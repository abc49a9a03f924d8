"""Real servers the tests start on 127.0.0.1, and a small proxy in front of them that can fail on purpose."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, proc: subprocess.Popen, log: Path, seconds: float = 120.0) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError(f"server at {url} did not start in {seconds:.0f}s: {log.read_text()[-2000:]}")


def start_llama_server(gguf: Path, alias: str, log: Path, n_ctx: int = 4096) -> tuple[subprocess.Popen, str]:
    """llama-cpp-python's OpenAI-compatible server on a free loopback port; returns (process, base URL)."""
    port = free_port()
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--model_alias", alias,
           "--host", "127.0.0.1", "--port", str(port), "--n_ctx", str(n_ctx), "--logits_all", "true",
           "--n_threads", "2"]
    proc = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}/v1"
    wait_for(base + "/models", proc, log)
    return proc, base


def llama_server_binary() -> Path:
    """llama.cpp's llama-server, built by setup-llama-server.sh (which `bash setup.sh all` runs)."""
    exe = Path(sys.executable).parent / "llama-server"
    if not exe.exists():
        raise RuntimeError(f"{exe} is missing: run bash setup-llama-server.sh (or bash setup.sh all)")
    return exe


def start_llamacpp_server(gguf: Path, alias: str, log: Path, slots: int = 4, n_ctx: int = 8192,
                          threads: int = 1) -> tuple[subprocess.Popen, str]:
    """llama.cpp's own server with `slots` parallel slots on a free loopback port; (process, base URL)."""
    port = free_port()
    cmd = [str(llama_server_binary()), "-m", str(gguf), "--alias", alias, "--host", "127.0.0.1", "--port", str(port),
           "-np", str(slots), "-c", str(n_ctx), "-t", str(threads), "--no-webui"]
    proc = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT)
    root = f"http://127.0.0.1:{port}"
    wait_for(root + "/health", proc, log)
    return proc, root + "/v1"


def start_vllm_router(workers: list[str], log: Path, policy: str = "consistent_hash") -> tuple[subprocess.Popen, str]:
    """vLLM's router (the vllm-router package) over worker roots, health-checked every second; returns
    (process, base URL)."""
    port = free_port()
    exe = Path(sys.executable).parent / "vllm-router"
    cmd = [str(exe), "--host", "127.0.0.1", "--port", str(port), "--worker-urls", *workers, "--policy", policy,
           "--health-check-interval-secs", "1", "--health-failure-threshold", "2", "--health-check-timeout-secs", "10",
           "--log-level", "warning",
           "--prometheus-host", "127.0.0.1", "--prometheus-port", str(free_port())]
    proc = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT)
    root = f"http://127.0.0.1:{port}"
    wait_for(root + "/health", proc, log)
    return proc, root + "/v1"


def start_vllm_server(model_dir: Path, name: str, log: Path, max_len: int = 2048,
                      python: str = sys.executable) -> tuple[subprocess.Popen, str]:
    """`vllm serve` (vLLM's OpenAI-compatible server, run by `python`) on a free loopback port; returns
    (process, base URL)."""
    port = free_port()
    cmd = [python, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir),
           "--served-model-name", name, "--host", "127.0.0.1", "--port", str(port), "--max-model-len", str(max_len),
           "--enable-prefix-caching", "--kv-cache-memory-bytes", str(1 << 30), "--dtype", "float32"]
    proc = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}/v1"
    try:
        wait_for(base + "/models", proc, log, seconds=600)
    except BaseException:
        proc.kill()
        raise
    return proc, base


def side_by_side(backend, n: int, timeout: float = 20.0) -> threading.Barrier:
    """Hold each of an OpenAI backend's next requests until `n` are in flight at once: requests sent one
    after another raise BrokenBarrierError after `timeout` seconds."""
    together = threading.Barrier(n, timeout=timeout)
    choices = backend._choices

    def held(url, body, extra=None):
        together.wait()
        return choices(url, body, extra)

    backend._choices = held
    return together


class Proxy:
    """Forwards requests to `upstream`; `plan` is a list of actions for the next POSTs: an HTTP status to
    answer with instead, or ("sleep", seconds) before forwarding. Records the headers and bodies it saw."""

    def __init__(self, upstream: str):
        self.upstream = upstream.rstrip("/")
        self.plan: list = []
        self.seen: list[dict[str, str]] = []
        self.bodies: list[dict] = []  # the JSON bodies of the POSTs
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _forward(self, method: str):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)) if method == "POST" else None
                proxy.seen.append(self.headers)  # its get() ignores case, as HTTP does
                if body:
                    proxy.bodies.append(json.loads(body))
                action = proxy.plan.pop(0) if proxy.plan and method == "POST" else None  # not health checks
                if isinstance(action, int):
                    data = json.dumps({"error": {"message": f"planned failure {action}"}}).encode()
                    self.send_response(action)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                if isinstance(action, tuple) and action[0] == "sleep":
                    time.sleep(action[1])
                path = self.path[3:] if self.path.startswith("/v1") else self.path
                req = urllib.request.Request(proxy.upstream + path, data=body, method=method,
                                             headers={"Content-Type": "application/json"})
                try:
                    with urllib.request.urlopen(req, timeout=120) as r:
                        data, status = r.read(), r.status
                except urllib.error.HTTPError as e:
                    data, status = e.read(), e.code
                except OSError:  # the upstream is gone (a late request after its test): answer as a proxy does,
                    # instead of a traceback on stderr that a later test's captured output would hold
                    data, status = b'{"error": {"message": "upstream unreachable"}}', 502
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:  # the client gave up (timeout)
                    pass

            def do_POST(self):
                self._forward("POST")

            def do_GET(self):
                self._forward("GET")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
