"""The pump's data server: nginx serving the pump's tree over HTTP, started and
stopped with the configuration that fills the tree.

Everything nginx writes (configuration, pid, logs, temp files) stays in the
configuration's state directory, so a pump may run several, one per tree and
port, beside a system nginx.  `DataServer(cfg, state)` is what `dd_sara
start/stop/status` use, and what any other caller may use.

dd starts the nginx master itself (`daemon off`), so it records the master's
identity in a pid file of its own (dd.pidfile); nginx's nginx.pid stays
nginx's.  Only a master whose identity matches, and whose command line runs
this configuration's nginx.conf, is reported or signalled.
"""
import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from dd import nginx, pidfile, private
from dd.errors import ConfigError, DDError

START_WAIT = 10.0
STOP_WAIT = 10.0


def _binary():
    found = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/sbin/nginx") if os.access(p, os.X_OK)), None)
    if not found:
        raise ConfigError("the data server needs nginx, which is not installed",
                          fix="apt-get install nginx-light, or unset data_server_port and serve "
                              "the tree with a web server of your own")
    return found


class DataServer:
    """nginx for one configuration: serves post_base_dir (else directory) on
    data_server_host:data_server_port.  Stopping needs no port: the pid file says
    what runs."""

    def __init__(self, cfg, state):
        self.root = Path(os.path.abspath(cfg.post_base_dir or cfg.directory))
        self.host = cfg.data_server_host
        self.port = cfg.data_server_port
        self.base = Path(state.dir) / "dataserver"
        self.url = f"http://{self.host}:{self.port}/"

    @property
    def private_dir(self):
        """The htpasswd files of private data (dd.private), one per set of readers."""
        return self.base / "private"

    def htpasswd(self, credentials, relay_readers=()):
        return private.Htpasswd(self.private_dir, credentials, relay_readers)

    @property
    def pid_file(self):
        """dd's record of the nginx master it started."""
        return self.base / "master.pid"

    @property
    def nginx_pid_file(self):
        """The pid file nginx writes: a bare pid, and how dd knew the master before master.pid."""
        return self.base / "nginx.pid"

    def _master(self):
        """The identity of the nginx master serving this configuration, verified; None when
        none runs."""
        # Without master.pid (an nginx started by an older dd), nginx.pid is read instead,
        # and like any bare pid believed only on the master's command line and owner.
        path = self.pid_file if self.pid_file.exists() else self.nginx_pid_file
        master = pidfile.live(path, legacy=self._runs_our_config)
        return master if master is not None and self._runs_our_config(master.pid) else None

    def _runs_our_config(self, pid):
        """Whether process `pid` is ours and runs nginx with this configuration's nginx.conf
        (the master rewrites its arguments into one title, which still ends with them)."""
        command = " ".join(pidfile.command_line(pid))
        return pidfile.owner(pid) == os.getuid() and command.endswith(f" -c {self.base}/nginx.conf")

    def pid(self):
        """The running nginx master's pid, or None."""
        master = self._master()
        return None if master is None else master.pid

    def write_config(self):
        self.base.mkdir(parents=True, exist_ok=True)
        for kind in nginx.TEMP_KINDS:
            (self.base / kind).mkdir(exist_ok=True)
        text = nginx.config(base=self.base, root=self.root, port=self.port, host=self.host,
                            user=getpass.getuser(), private=self.private_dir)
        (self.base / "nginx.conf").write_text(text)
        return self.base / "nginx.conf"

    def start(self):
        """Start nginx unless it runs or no port is configured; return its pid (None: not
        configured) once it accepts connections."""
        running = self.pid()
        if running or self.port is None:
            return running
        binary = _binary()
        if self._accepts():
            raise DDError(f"the data server cannot listen on {self.host}:{self.port}: "
                          f"something else already does", fix="choose another data_server_port")
        self.root.mkdir(parents=True, exist_ok=True)
        self.write_config()
        with open(self.base / "nginx.out", "ab") as out:
            process = subprocess.Popen(nginx.command(binary, self.base), stdin=subprocess.DEVNULL,
                                       stdout=out, stderr=out, start_new_session=True, close_fds=True)
        pidfile.write(self.pid_file, process.pid)
        deadline = time.monotonic() + START_WAIT
        # nginx writes its pid file once it holds its listening socket.
        while not (pidfile.read(self.nginx_pid_file) == process.pid and self._accepts()):
            if process.poll() is not None or time.monotonic() > deadline:
                if process.poll() is None:
                    process.kill()
                    process.wait()
                self.pid_file.unlink(missing_ok=True)
                raise DDError(f"the data server (nginx on {self.host}:{self.port}) did not start: "
                              f"{self._last_error()}",
                              fix="choose another data_server_port, or see the log in " + str(self.base))
            time.sleep(0.05)
        return process.pid

    def stop(self):
        """Stop nginx gracefully (SIGQUIT lets transfers in progress finish); True if it ran.
        A pid file that names no master of ours is removed, and nothing is signalled."""
        master = self._master()
        if master is not None:
            deadline = time.monotonic() + STOP_WAIT
            signum = signal.SIGQUIT
            while pidfile.send(master, signum):
                if time.monotonic() > deadline:
                    signum = signal.SIGKILL
                time.sleep(0.1)
        self.pid_file.unlink(missing_ok=True)
        return master is not None

    def status(self):
        """One line for `status`, or None when there is no data server to speak of."""
        pid = self.pid()
        if pid is None and self.port is None:
            return None
        state = f"running (pid {pid})" if pid else "stopped"
        return f"data server {self.url} serving {self.root}: {state}"

    def _accepts(self):
        try:
            socket.create_connection((self.host if self.host != "0.0.0.0" else "127.0.0.1", self.port),
                                     timeout=1).close()
            return True
        except OSError:
            return False

    def _last_error(self):
        for name in ("error.log", "nginx.out"):
            try:
                lines = (self.base / name).read_text(errors="replace").strip().splitlines()
            except OSError:
                continue
            if lines:
                return lines[-1]
        return "no message"
