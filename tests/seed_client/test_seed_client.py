"""A Python client of the seed sandbox server's API, run against `slotbox serve`.

The seed's clients (hermes-agent's SandboxExecutor / SlotPool, the atropos client) speak plain JSON
over HTTP: POST /execute with {"slot_id", "tool", "args", "execution_id", "timeout"}, /batch,
/reset, /artifacts/*, GET /health. These calls are written from the documented protocol
(shared/docs/seed-sandbox-server.md, section 11), with the standard library only, and read the
fields those clients read. Run: python3 -m unittest discover -s tests/seed_client
(SLOTBOX_BIN names the binary; default target/debug/slotbox).
"""

import base64
import io
import json
import os
import subprocess
import tarfile
import tempfile
import unittest
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BINARY = os.environ.get("SLOTBOX_BIN", os.path.join(ROOT, "target", "debug", "slotbox"))


class SeedClient:
    """The calls a seed client makes, as it makes them (no auth header, JSON bodies)."""

    def __init__(self, base):
        self.base = base

    def _request(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    def execute(self, slot_id, tool, args, execution_id=None, timeout=30.0):
        return self._request("POST", "/execute", {
            "slot_id": slot_id, "tool": tool, "args": args,
            "execution_id": execution_id, "timeout": timeout,
        })[1]

    def batch(self, requests):
        return self._request("POST", "/batch", requests)[1]

    def reset(self, slot_id):
        return self._request("POST", "/reset", {"slot_id": slot_id})[1]

    def health(self):
        return self._request("GET", "/health")[1]

    def artifacts(self, kind, body):
        return self._request("POST", "/artifacts/" + kind, body)


class SeedClientAgainstSlotbox(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.data = tempfile.TemporaryDirectory()
        cls.server = subprocess.Popen(
            [BINARY, "serve", "--port", "0", "--slots", "3", "--data-dir", os.path.join(cls.data.name, "data")],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        line = cls.server.stdout.readline()
        prefix = "slotbox serve: listening on "
        if not line.startswith(prefix):
            cls.server.kill()
            raise RuntimeError("slotbox serve did not start: %r %s" % (line, cls.server.stderr.read()))
        cls.client = SeedClient(line[len(prefix):].strip())

    @classmethod
    def tearDownClass(cls):
        cls.server.terminate()
        cls.server.wait(timeout=30)
        cls.data.cleanup()

    def test_health(self):
        health = self.client.health()
        self.assertEqual(health["status"], "ok")
        self.assertEqual(health["slots"], 3)
        self.assertTrue(health["bwrap_available"])

    def test_execute_bash(self):
        result = self.client.execute("slot_0", "bash", {"command": "echo hello; echo oops >&2; exit 2"}, "ex-1")
        self.assertEqual(set(result), {"success", "output", "error", "execution_id", "metadata"})
        self.assertFalse(result["success"])
        self.assertEqual(result["error"], "Exit code: 2")
        self.assertEqual(result["execution_id"], "ex-1")
        self.assertEqual(result["metadata"]["exit_code"], 2)
        self.assertEqual(result["output"], "hello\n\n[stderr]\noops\n")
        ok = self.client.execute("slot_0", "bash", {"command": "echo fine"})
        self.assertTrue(ok["success"])
        self.assertEqual(ok["output"].strip(), "fine")

    def test_timeout(self):
        result = self.client.execute("slot_1", "bash", {"command": "sleep 30"}, timeout=0.5)
        self.assertFalse(result["success"])
        self.assertEqual(result["metadata"]["exit_code"], -1)
        self.assertTrue(result["metadata"]["timeout"])
        self.assertEqual(result["error"], "Command timed out after 0.5s")

    def test_write_read_reset(self):
        written = self.client.execute("slot_2", "write_file", {"path": "notes/todo.txt", "content": "héllo\n"})
        self.assertTrue(written["success"], written)
        read = self.client.execute("slot_2", "read_file", {"path": "notes/todo.txt"})
        self.assertEqual(read["output"], "héllo\n")
        seen = self.client.execute("slot_2", "bash", {"command": "cat /workspace/notes/todo.txt"})
        self.assertEqual(seen["output"], "héllo\n")
        reset = self.client.reset("slot_2")
        self.assertTrue(reset["success"])
        self.assertEqual(reset["output"], "Reset workspace for slot_2")
        gone = self.client.execute("slot_2", "read_file", {"path": "notes/todo.txt"})
        self.assertEqual(gone["error"], "File not found: notes/todo.txt")

    def test_batch(self):
        results = self.client.batch([
            {"slot_id": "slot_0", "tool": "bash", "args": {"command": "echo a"}},
            {"slot_id": "slot_1", "tool": "bash", "args": {"command": "echo b"}},
            {"slot_id": "slot_9", "tool": "bash", "args": {"command": "echo c"}},
        ])
        self.assertEqual([r.get("output") for r in results[:2]], ["a\n", "b\n"])
        self.assertEqual(results[2]["error"], "Unknown slot: slot_9")

    def test_artifacts(self):
        self.client.execute("slot_0", "bash", {"command": "mkdir -p out && printf 'yo\\n' > out/b.log"})
        status, read = self.client.artifacts("read", {"slot_id": "slot_0", "path": "out/b.log", "include_sha256": True})
        self.assertEqual(status, 200)
        self.assertEqual(read["content"], "yo\n")
        self.assertEqual(read["mime"], "text/plain")
        status, listing = self.client.artifacts("list", {"slot_id": "slot_0", "path": "out"})
        self.assertEqual([entry["path"] for entry in listing["entries"]], ["out/b.log"])
        status, archive = self.client.artifacts("archive", {"slot_id": "slot_0", "path": "out"})
        self.assertEqual(status, 200)
        with tarfile.open(fileobj=io.BytesIO(base64.b64decode(archive["content"])), mode="r:gz") as tar:
            self.assertEqual(tar.getnames(), ["out/b.log"])
        status, denied = self.client.artifacts("read", {"slot_id": "slot_0", "path": "../../etc/passwd"})
        self.assertEqual(status, 403)
        self.assertEqual(denied["error"], "Access denied: path outside workspace")


if __name__ == "__main__":
    unittest.main()
