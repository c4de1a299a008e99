"""The pump's data server: nginx serving the pump's tree over HTTP or HTTPS, started
and stopped with the configuration that fills the tree.

Everything nginx writes (configuration, pid, logs, temp files) stays in the
configuration's state directory, so a pump may run several, one per tree and
port, beside a system nginx.  Started as root, its workers run as
`data_server_user`, who must reach the tree; private data is readable by that
user's group only.  It refuses to serve a tree that holds dd's own
configuration, state or logs, and serves private data over plain HTTP on
loopback only.  `DataServer(cfg, state, env)` is what `dd_sara start/stop/status`
use, and what any other caller may use.

dd starts the nginx master itself (`daemon off`), so it records the master's
identity in a pid file of its own (dd.store.pidfile); nginx's nginx.pid stays
nginx's.  Only a master whose identity matches, and whose command line runs
this configuration's nginx.conf, is reported or signalled.
"""
import grp
import ipaddress
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import time
from pathlib import Path

from dd.pump import nginx, private
from dd.store import pidfile
from dd.core.errors import ConfigError, DDError

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


def loopback(host):
    """Whether a server listening on `host` listens on this machine only (the data server, the
    console)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class DataServer:
    """nginx for one configuration: serves post_base_dir (else directory) on
    data_server_host:data_server_port, over HTTPS with data_server_certificate.
    Stopping needs no port: the pid file says what runs."""

    def __init__(self, cfg, state, env):
        self.root = Path(os.path.abspath(cfg.post_base_dir or cfg.directory))
        self.host = cfg.data_server_host
        self.port = cfg.data_server_port
        self.certificate, self.key = cfg.data_server_certificate, cfg.data_server_key
        self.websocket = cfg.data_server_websocket
        self.scheme = "https" if self.certificate else "http"
        self.base = Path(state.dir) / "dataserver"
        self.url = f"{self.scheme}://{self.host}:{self.port}/"
        self.announced = cfg.post_base_url
        self.relay_readers = cfg.relay_readers or ()
        self.dd_directories = {"configuration": ("DD_CONFIG_DIR", env.config_dir),
                               "state": ("DD_STATE_DIR", env.state_dir), "log": ("DD_LOG_DIR", env.log_dir)}
        # Workers drop root's privileges; run by anyone else, they keep that user's.
        self.workers = _account(cfg.data_server_user) if os.geteuid() == 0 else None

    @property
    def private_dir(self):
        """The htpasswd files of private data (dd.pump.private), one per set of readers."""
        return self.base / "private"

    @property
    def group(self):
        """The group private files belong to: the workers' (-1: ours, as the workers run as us)."""
        return self.workers.pw_gid if self.workers else -1

    def htpasswd(self, credentials):
        return private.Htpasswd(self.private_dir, credentials, self.announced, self.relay_readers, self.group)

    def check(self):
        """ConfigError for a data server that must not run as configured."""
        if self.port is None:
            return
        if bool(self.certificate) != bool(self.key):
            raise ConfigError("the data server needs both data_server_certificate and data_server_key for HTTPS",
                              fix="set both, or neither for plain HTTP")
        url = self.announced
        if url is not None and url.port == self.port and url.scheme in ("http", "https") \
                and url.scheme != self.scheme:
            raise ConfigError(f"post_base_url {url} announces {url.scheme}, but the data server on port "
                              f"{self.port} serves {self.scheme}",
                              fix="set data_server_certificate and data_server_key, and announce https://"
                              if self.scheme == "http" else f"announce {self.scheme}:// URLs")
        for what, (variable, directory) in self.dd_directories.items():
            if _within(Path(directory), self.root):
                raise ConfigError(f"the data server would serve dd's {what} directory {directory}: it is "
                                  f"inside {self.root}",
                                  fix=f"serve a tree that holds only data (directory, post_base_dir), or set "
                                      f"{variable} elsewhere")

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
        tls = (self.port, self.certificate, self.key) if self.certificate else None
        workers = (self.workers.pw_name, grp.getgrgid(self.workers.pw_gid).gr_name) if self.workers else None
        text = nginx.config(base=self.base, root=self.root, port=None if tls else self.port, host=self.host,
                            tls=tls, user=workers, private=self.private_dir,
                            private_refused=not tls and not loopback(self.host), websocket=self.websocket)
        (self.base / "nginx.conf").write_text(text)
        return self.base / "nginx.conf"

    def start(self):
        """Start nginx unless it runs or no port is configured; return its pid (None: not
        configured) once it accepts connections."""
        running = self.pid()
        if running or self.port is None:
            return running
        binary = _binary()
        self.check()
        if self._accepts():
            raise DDError(f"the data server cannot listen on {self.host}:{self.port}: "
                          f"something else already does", fix="choose another data_server_port")
        self.root.mkdir(parents=True, exist_ok=True)
        self.private_dir.mkdir(parents=True, exist_ok=True)
        if self.workers:
            for path in (self.root, self.private_dir):
                _reachable(path, self.workers)
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


def _account(name):
    try:
        return pwd.getpwnam(name)
    except KeyError:
        raise ConfigError(f"data_server_user {name} does not exist",
                          fix="create it, or name the user the web server runs as (www-data on Debian)") from None


def _within(path, root):
    """Whether `path` is `root` or below it, once links are resolved."""
    path, root = os.path.realpath(path), os.path.realpath(root)
    return os.path.commonpath([path, root]) == root


def _reachable(path, account):
    """ConfigError unless `account` may search every directory down to `path`, the
    permissions nginx's workers need to serve what is below it."""
    groups = set(os.getgrouplist(account.pw_name, account.pw_gid))
    current = Path(os.path.realpath(path))
    for directory in [*reversed(current.parents), current]:
        st = directory.stat()
        if st.st_uid == account.pw_uid:
            searchable = st.st_mode & stat.S_IXUSR
        elif st.st_gid in groups:
            searchable = st.st_mode & stat.S_IXGRP
        else:
            searchable = st.st_mode & stat.S_IXOTH
        if not searchable:
            raise ConfigError(f"the data server's workers (user {account.pw_name}) cannot reach {path}: "
                              f"{directory} is not searchable by them",
                              fix=f"chmod o+x {directory}, or keep the tree and DD_STATE_DIR where "
                                  f"{account.pw_name} can reach them (e.g. below /srv or /var/lib)")
