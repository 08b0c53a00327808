"""An OpenAI-compatible server that answers every chat or completions request at once with the same short
completion: what `scripts/compare_http_client.py` measures clients against. `python instant_server.py PORT`.

asyncio's Protocol API, HTTP/1.1 keep-alive, no framework: the server should cost less than any client.
"""

import asyncio
import json
import sys

CHAT = json.dumps({
    "id": "instant", "object": "chat.completion", "created": 0, "model": "instant",
    "choices": [{"index": 0, "finish_reason": "stop",
                 "message": {"role": "assistant", "content": "2 + 2 = 4\nThe answer is \\boxed{4}."}}],
    "usage": {"prompt_tokens": 40, "completion_tokens": 12, "total_tokens": 52},
}).encode()
MODELS = json.dumps({"object": "list", "data": [{"id": "instant", "object": "model", "owned_by": "instant"}]}).encode()


def response(body):
    head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


class Instant(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
        self.buf = b""

    def data_received(self, data):
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end].decode("latin-1")
            length = 0
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            if len(self.buf) < end + 4 + length:
                return
            self.buf = self.buf[end + 4 + length:]
            self.transport.write(response(MODELS if head.startswith("GET") else CHAT))


async def main(port):
    server = await asyncio.get_running_loop().create_server(Instant, "127.0.0.1", port, backlog=4096)
    print(f"http://127.0.0.1:{port}/v1", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
