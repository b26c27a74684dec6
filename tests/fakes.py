"""Stand-ins for what lies outside AgentWatch: the LLM provider and webhook receivers, as local HTTP servers."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Server:
    def __init__(self, handler_cls):
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler_cls)
        self.httpd.owner = self
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


class FakeOpenAI(_Server):
    """Answers POST /v1/chat/completions like OpenAI, with the usage the test asks for.

    `prompt_tokens` may be an int or a callable(call_number) -> int, so a test can make prompts grow."""

    def __init__(self, *, prompt_tokens=100, completion_tokens=20, reply="ok"):
        self.calls: list[dict] = []
        self.prompt_tokens = prompt_tokens
        self.completion_tokens = completion_tokens
        self.reply = reply
        self.lock = threading.Lock()
        super().__init__(_OpenAIHandler)


class _OpenAIHandler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_POST(self):
        owner: FakeOpenAI = self.server.owner
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        with owner.lock:
            owner.calls.append(body)
            n = len(owner.calls)
        prompt = owner.prompt_tokens(n) if callable(owner.prompt_tokens) else owner.prompt_tokens
        payload = {
            "id": f"chatcmpl-{n}", "object": "chat.completion", "created": 1700000000,
            "model": body.get("model", "gpt-4o"),
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": owner.reply}}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": owner.completion_tokens,
                      "total_tokens": prompt + owner.completion_tokens},
        }
        data = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class WebhookReceiver(_Server):
    """Records every POST. `statuses` is the list of HTTP statuses to answer in turn (then 200)."""

    def __init__(self, statuses=None, delay_seconds: float = 0.0):
        self.requests: list[dict] = []
        self.statuses = list(statuses or [])
        self.delay_seconds = delay_seconds
        self.lock = threading.Lock()
        super().__init__(_WebhookHandler)


class _WebhookHandler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_POST(self):
        import time

        owner: WebhookReceiver = self.server.owner
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with owner.lock:
            owner.requests.append({"headers": dict(self.headers.items()), "body": raw, "path": self.path})
            status = owner.statuses.pop(0) if owner.statuses else 200
        if owner.delay_seconds:
            time.sleep(owner.delay_seconds)
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")
