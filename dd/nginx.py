"""The data server of a pump: an nginx configuration serving a tree over HTTP.

nginx (Debian's nginx-light) serves byte ranges, keep-alive and sendfile out of
the box; dd only writes its configuration, with every path nginx writes to
(pid, logs, temp files) kept inside one private directory.
"""
import textwrap

TEMP_KINDS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")


def config(*, base, root, port, host="127.0.0.1", tls=None, user="root", autoindex=False, private=None):
    """nginx.conf text serving `root` on host:port, run from private directory `base`.

    `tls` is (port, certificate file, key file) to also serve HTTPS.  `user root`
    lets workers read private directories; pumps give their own service user.
    `private`, a pump's directory of htpasswd files (dd.private), makes
    /private/<readers>/ ask for a password, and hides partial files (dot names).
    """
    temp_paths = "\n".join(f"    {kind}_temp_path {base}/{kind};" for kind in TEMP_KINDS)
    listen = [f"listen {host}:{port};"]
    if tls:
        tls_port, cert, key = tls
        listen += [f"listen {host}:{tls_port} ssl;", f"ssl_certificate {cert};",
                   f"ssl_certificate_key {key};"]
    server = "\n".join([*listen, f"root {root};", f"autoindex {'on' if autoindex else 'off'};"])
    if private:
        # nginx reads auth_basic_user_file at each request: new readers need no reload.
        server += textwrap.dedent(f"""
            location ~ /\\. {{ return 404; }}
            location ~ ^/private/([A-Za-z0-9_,-]+)/ {{
                auth_basic "private data";
                auth_basic_user_file {private}/$1;
            }}""")
    # keepalive_requests: nginx's default of 1000 would close a subscriber's connection
    # every thousand files.
    return textwrap.dedent(f"""\
        user {user};
        daemon off;
        worker_processes 1;
        pid {base}/nginx.pid;
        error_log {base}/error.log;
        events {{ worker_connections 256; }}
        http {{
            access_log off;
            sendfile on;
            keepalive_requests 1000000;
            default_type application/octet-stream;
        {temp_paths}
            server {{
        {textwrap.indent(server, "        ")}
            }}
        }}
        """)


def command(nginx, base):
    """The command line that runs nginx in the foreground with the configuration in `base`."""
    return [nginx, "-p", str(base), "-e", f"{base}/error.log", "-c", f"{base}/nginx.conf"]
