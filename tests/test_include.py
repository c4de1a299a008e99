"""`include https://...`: a snippet served by a real nginx over TLS, read by the real
`dd_subscribe show`: refreshed when it changes upstream, its last good copy used while the
server is down, and nothing but include_allow's options taken from it."""
import json
import os
import subprocess
import sys
import time

import pytest

from tests.support.servers import NGINX, _stop, _workspace, free_port, start_nginx

SNIPPET = "snippet.conf"


@pytest.fixture
def server(tmp_path_factory):
    """(nginx over TLS serving a snippet, a way to stop it): one per test, since tests stop it."""
    base, root, port = _workspace(tmp_path_factory, NGINX)
    process, the_server = start_nginx(base, root, port, free_port())
    (root / SNIPPET).write_text("subtopic a.#\naccept .*\\.txt\n")
    yield the_server, lambda: _stop(process)
    if process.poll() is None:
        _stop(process)


class Subscriber:
    """dd's directories in tmp, one configuration `sub`, and `dd_subscribe show sub` run as a process."""

    def __init__(self, tmp_path, ca_file):
        self.config_dir, self.state_dir = tmp_path / "config", tmp_path / "state"
        self.ca_file = ca_file
        self.env = {k: v for k, v in os.environ.items() if k not in ("SSL_CERT_FILE", "SSL_CERT_DIR")}
        self.env.update(DD_CONFIG_DIR=str(self.config_dir), DD_STATE_DIR=str(self.state_dir),
                        DD_LOG_DIR=str(tmp_path / "logs"))

    def configure(self, url, *, refresh="1h", ca=True, extra=""):
        path = self.config_dir / "subscribe" / "sub.conf"
        path.parent.mkdir(parents=True, exist_ok=True)
        trust = f"https_ca_file {self.ca_file}\n" if ca else ""
        path.write_text(f"{trust}include_refresh {refresh}\n{extra}include {url}\ndirectory /tmp/sub\n")

    def show(self):
        return subprocess.run([sys.executable, "-m", "dd.cli.main", "subscribe", "show", "sub"],
                              env=self.env, capture_output=True, text=True, timeout=60)

    def cached(self):
        return [json.loads(path.read_text()) for path in (self.state_dir / "include").glob("*.json")]


@pytest.fixture
def subscriber(tmp_path, server):
    return Subscriber(tmp_path, server[0].ca_file)


def shown(result, option):
    """The lines of `show` that set `option`."""
    assert result.returncode == 0, result.stderr
    return [line for line in result.stdout.splitlines() if line.startswith(f"{option} ")]


def one_line(result):
    assert result.returncode == 2, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def change(path, text):
    """Rewrite the snippet with a later mtime, so nginx's ETag and Last-Modified change too."""
    path.write_text(text)
    later = time.time() + 5
    os.utime(path, (later, later))


def test_a_changed_snippet_is_picked_up_after_include_refresh(server, subscriber):
    nginx, _ = server
    url = f"{nginx.https_url}{SNIPPET}"
    subscriber.configure(url)
    first = subscriber.show()
    assert shown(first, "subtopic") == [f"{'subtopic a.#':<48} # {url}:1"]
    assert "accept .*\\.txt" in first.stdout and f"# {url}:2" in first.stdout
    assert shown(first, "directory")[-1].startswith("directory /tmp/sub")   # the local file's own lines stay

    change(nginx.root / SNIPPET, "subtopic bb.#\n")
    assert shown(subscriber.show(), "subtopic")[0].startswith("subtopic a.# "), "1h: the copy is still fresh"

    subscriber.configure(url, refresh="1s")
    time.sleep(1.2)
    assert shown(subscriber.show(), "subtopic")[0].startswith("subtopic bb.# ")
    [copy] = subscriber.cached()
    assert copy["url"] == url and copy["etag"] and copy["text"] == "subtopic bb.#\n"

    # Unchanged upstream: revalidated (304), the copy kept and its age started again.
    [path] = (subscriber.state_dir / "include").glob("*.json")
    before = path.stat().st_mtime
    time.sleep(1.2)
    assert shown(subscriber.show(), "subtopic")[0].startswith("subtopic bb.# ")
    assert path.stat().st_mtime > before and subscriber.cached() == [copy]


def test_server_down_the_last_good_copy_is_used_with_a_warning(server, subscriber):
    nginx, stop = server
    url = f"{nginx.https_url}{SNIPPET}".replace("https://", "https://ann:s3cret@")
    subscriber.configure(url, refresh="1s")
    assert shown(subscriber.show(), "subtopic")[0].startswith("subtopic a.# ")
    stop()
    time.sleep(1.2)
    result = subscriber.show()
    assert shown(result, "subtopic")[0].startswith("subtopic a.# ")
    warning = result.stderr.strip().splitlines()
    assert len(warning) == 1, result.stderr
    assert f"cannot fetch https://ann@{nginx.https_url[8:]}{SNIPPET}: connection refused; using the copy " \
           "fetched" in warning[0]
    assert "s3cret" not in result.stderr + result.stdout + "".join(map(str, subscriber.cached()))

    # Never fetched, nothing to fall back on: the configuration does not load.
    subscriber.configure(f"{nginx.https_url}other.conf")
    line = one_line(subscriber.show())
    assert "cannot fetch" in line and "connection refused, and no copy of it was kept" in line


def test_a_snippet_setting_a_refused_option_is_refused_in_one_line(server, subscriber):
    nginx, _ = server
    url = f"{nginx.https_url}{SNIPPET}"
    (nginx.root / SNIPPET).write_text("subtopic a.#\non_file touch /tmp/owned\n")
    subscriber.configure(url)
    line = one_line(subscriber.show())
    assert line.startswith(f"dd_subscribe: {url}:2: a remote include may not set on_file (include_allow: "
                           "exchange topic_prefix subtopic accept reject accept_unmatched) (add on_file")

    # Trusted explicitly, it is taken.
    subscriber.configure(url, extra="include_allow subtopic on_file\n")
    assert shown(subscriber.show(), "on_file") == [f"{'on_file touch /tmp/owned':<48} # {url}:2"]

    # What rules remote includes is never theirs, whatever include_allow says.
    (nginx.root / SNIPPET).write_text("include_allow on_file\n")
    subscriber.configure(f"{nginx.https_url}{SNIPPET}?2")
    assert "a remote include may not set include_allow" in one_line(subscriber.show())


@pytest.mark.parametrize("snippet, message", [
    ("include /etc/passwd\n", "a remote include may not include anything"),
    ("include https://127.0.0.1:9/x.conf\n", "a remote include may not include anything"),
    ("subtopic ${DD_SECRET}\n", "a remote include sees no environment variable: ${DD_SECRET}"),
    ("directory /home\n", "a remote include may not set directory"),
])
def test_a_snippet_reaches_nothing_local(server, subscriber, snippet, message):
    nginx, _ = server
    (nginx.root / SNIPPET).write_text(snippet)
    subscriber.env["DD_SECRET"] = "hunter2"
    subscriber.configure(f"{nginx.https_url}{SNIPPET}")
    line = one_line(subscriber.show())
    assert message in line and "hunter2" not in line


def test_only_https_with_a_certificate_dd_trusts(server, subscriber):
    nginx, _ = server
    subscriber.configure(f"{nginx.url}{SNIPPET}")
    assert "a remote include is fetched over https only (use https://)" in one_line(subscriber.show())

    subscriber.configure(f"{nginx.https_url}{SNIPPET}", ca=False)
    line = one_line(subscriber.show())
    assert "TLS failed: " in line and "certificate" in line and "https_ca_file" in line
    assert subscriber.cached() == []
