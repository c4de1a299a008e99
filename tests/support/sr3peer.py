"""The real sr3 (metpx-sr3) as a peer in tests: it posts and subscribes under
a HOME of its own (against the broker vhost the tests' fixtures make), and
every process it starts is stopped, by id, when the peer closes.

    with Sr3Peer(tmp_path, broker_url) as peer:     # broker_url: see tests/support/brokers.py
        peer.post([path], exchange="xs_guest", post_base_url="http://host/",
                  post_base_dir=str(tmp_path), checksum="md5")
        run = peer.subscribe_foreground("s1", [("exchange", "xs_guest"), ...])
        run.wait()      # with messageCountMax set, sr3 exits by itself

sr3 reads ~/.config/sr3/<component>/<name>.conf and ~/.config/sr3/credentials.conf
(the broker URL with its password; configurations name it without) and keeps
logs and pid files in ~/.cache/sr3.  It is run as ``python -m`` of its console
scripts' modules, so it is the sr3 installed beside the tests' Python.
"""
import contextlib
import os
import signal
import subprocess
import sys
import urllib.parse
from pathlib import Path


class Sr3Error(AssertionError):
    """sr3 failed or overran its time: the message carries the end of its output."""


class Sr3Run:
    """An sr3 process started in the background, with its output in a file."""

    def __init__(self, args, env, log_path):
        self.args, self.log_path = args, log_path
        with open(log_path, "wb") as log:
            # Its own session, so stopping reaches the instance sr3 forks too.
            self.process = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True)

    @property
    def output(self):
        return self.log_path.read_text(errors="replace")

    def wait(self, timeout=20.0):
        """Wait for sr3 to exit by itself; past `timeout`, stop it and fail."""
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise Sr3Error(f"{' '.join(self.args[-2:])} still running after {timeout}s: "
                           f"{self.output[-2000:]}") from None

    def stop(self, grace=10.0):
        if self.process.poll() is not None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, sig)
            try:
                self.process.wait(grace)
                return
            except subprocess.TimeoutExpired:
                continue


#: sr3 3.3.1's MQTT publisher calls copy.copy without importing copy (a NameError at its
#: first publish): its commands run with the module put where that code looks for it.
_WITH_COPY = ("import builtins, copy, runpy, sys; builtins.copy = copy; sys.argv.pop(0); "
              "runpy.run_module(sys.argv[0], run_name='__main__', alter_sys=True)")


class Sr3Peer:
    def __init__(self, home, broker_url, *, timeout=20.0):
        self.home = Path(home)
        self.timeout = timeout
        self.mqtt = broker_url.startswith("mqtt")
        url = urllib.parse.urlsplit(broker_url)
        netloc = url.hostname + (f":{url.port}" if url.port else "")
        # Configurations name the broker without its password, which sr3 finds in credentials.conf.
        self.broker = urllib.parse.urlunsplit(
            (url.scheme, f"{url.username}@{netloc}", url.path or "/", "", ""))
        self.config_dir = self.home / ".config" / "sr3"
        self.cache_dir = self.home / ".cache" / "sr3"
        self.config_dir.mkdir(parents=True, exist_ok=True)
        (self.config_dir / "credentials.conf").write_text(broker_url + "\n")
        self.env = dict(os.environ, HOME=str(self.home), XDG_CONFIG_HOME=str(self.home / ".config"),
                        XDG_CACHE_HOME=str(self.home / ".cache"))
        self._runs = []
        self._started = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def write_config(self, component, name, options):
        """Write <component>/<name>.conf from {option: value} or (option, value) pairs; pairs
        may repeat an option and keep their order, which sr3 minds (topicPrefix, subtopic)."""
        pairs = options.items() if hasattr(options, "items") else options
        path = self.config_dir / component / f"{name}.conf"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(f"{key} {value}\n" for key, value in pairs))
        return path

    def post(self, paths, *, exchange, post_base_url, post_base_dir, topic_prefix=None,
             post_format=None, checksum=None, options=None, name="dd-peer"):
        """Post files with sr3_post; returns the finished process (output in .stdout)."""
        config = {"post_broker": self.broker, "post_exchange": exchange,
                  "post_baseUrl": post_base_url, "post_baseDir": post_base_dir}
        for key, value in (("post_topicPrefix", topic_prefix), ("post_format", post_format),
                           ("identity", checksum)):
            if value is not None:
                config[key] = value
        self.write_config("post", name, [*config.items(), *dict(options or {}).items()])
        return self._run("sarracenia.sr_post", "--config", name, *map(str, paths))

    def declare(self, component, name):
        """Declare the exchanges, queues and bindings of a configuration, then return."""
        return self._run("sarracenia.sr", "declare", f"{component}/{name}")

    def subscribe_foreground(self, name, options=None):
        """Run subscribe/<name> in the foreground, first writing it from `options` (as for
        write_config, the broker added) if given: returns an Sr3Run.  With
        `messageCountMax N` among the options sr3 exits after N messages."""
        if options is not None:
            pairs = options.items() if hasattr(options, "items") else options
            self.write_config("subscribe", name, [("broker", self.broker), *pairs])
        run = Sr3Run(self._command("sarracenia.sr", "foreground", f"subscribe/{name}"), self.env,
                     self.home / f"subscribe-{name}.out")
        self._runs.append(run)
        return run

    def mirror(self, name, exchange, directory, options=()):
        """Write and declare subscribe/<name>: it mirrors into `directory` whatever `exchange`
        announces under either Sarracenia topic tree (v03 and v02.post).  Declaring makes the
        queue and its bindings exist before anything is published; the exchange must exist."""
        self.write_config("subscribe", name, [
            ("broker", self.broker), ("exchange", exchange), ("queueName", f"q_guest.{name}_{exchange}"),
            ("topicPrefix", "v03"), ("subtopic", "#"), ("topicPrefix", "v02.post"), ("subtopic", "#"),
            ("directory", directory), ("mirror", "on"), *options])
        self.declare("subscribe", name)

    def start(self, component, name):
        """Start a written configuration as sr3 daemons (sr3 start)."""
        self._run("sarracenia.sr", "start", f"{component}/{name}")
        self._started.append((component, name))

    def stop(self, component, name):
        self._run("sarracenia.sr", "stop", f"{component}/{name}")
        self._started.remove((component, name))

    def log(self, component, name):
        """Everything the daemons of a configuration have logged."""
        logs = sorted((self.cache_dir / "log").glob(f"{component}_{name}_*.log"))
        return "".join(path.read_text(errors="replace") for path in logs)

    def close(self):
        for run in self._runs:
            run.stop()
        for component, name in list(self._started):
            try:
                self.stop(component, name)
            except (Sr3Error, subprocess.TimeoutExpired):
                self._kill_instances(component, name)

    def _kill_instances(self, component, name):
        for pid_file in (self.cache_dir / component / name).glob("*.pid"):
            with contextlib.suppress(ValueError, ProcessLookupError, OSError):
                os.kill(int(pid_file.read_text().strip()), signal.SIGKILL)

    def _command(self, module, *args):
        if self.mqtt:
            return [sys.executable, "-c", _WITH_COPY, module, *args]
        return [sys.executable, "-m", module, *args]

    def _run(self, module, *args):
        command = self._command(module, *args)
        result = subprocess.run(command, env=self.env, capture_output=True, text=True,
                                timeout=self.timeout, stdin=subprocess.DEVNULL)
        if result.returncode:
            raise Sr3Error(f"{' '.join(command[command.index(module):])} exited {result.returncode}: "
                           f"{(result.stdout + result.stderr)[-2000:]}")
        return result
