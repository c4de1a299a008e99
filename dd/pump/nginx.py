"""The data server of a pump: an nginx configuration serving a tree over HTTP(S).

nginx (Debian's nginx-light) serves byte ranges, keep-alive and sendfile out of
the box; dd only writes its configuration, with every path nginx writes to
(pid, logs, temp files) kept inside one private directory.  It never follows a
symbolic link (disable_symlinks): a link in the tree is announced as a link,
never served as the file it points to, so no link can lead a reader out of the
tree or into private data.
"""
import textwrap

TEMP_KINDS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")


def config(*, base, root, port, host="127.0.0.1", tls=None, user=None, autoindex=False, private=None,
           private_refused=False, websocket=None):
    """nginx.conf text serving `root` on host:port, run from private directory `base`.

    `port` None: no plain HTTP listener.  `tls` is (port, certificate file, key file) to
    serve HTTPS.  `user` (with its group) is who the workers run as, when nginx starts
    as root; None leaves nginx's default.  `private`, a pump's directory of htpasswd
    files (dd.pump.private), makes /private/<readers>/ ask for a password, and hides partial
    files (dot names); `private_refused` refuses /private/ instead (plain HTTP on a
    network: passwords and data would travel in clear).  `websocket`, a ws:// URL, is a
    WebSocket listener (a broker's MQTT over WebSockets) proxied at its URL's path.
    """
    temp_paths = "\n".join(f"    {kind}_temp_path {base}/{kind};" for kind in TEMP_KINDS)
    listen = [f"listen {host}:{port};"] if port is not None else []
    if tls:
        tls_port, cert, key = tls
        listen += [f"listen {host}:{tls_port} ssl;", f"ssl_certificate {cert};",
                   f"ssl_certificate_key {key};"]
    server = "\n".join([*listen, f"root {root};", f"autoindex {'on' if autoindex else 'off'};"])
    if private_refused:
        server += textwrap.dedent("""
            location ~ /\\. { return 404; }
            location ^~ /private/ { return 403; }""")
    elif private:
        # nginx reads auth_basic_user_file at each request: new readers need no reload.
        server += textwrap.dedent(f"""
            location ~ /\\. {{ return 404; }}
            location ~ ^/private/([A-Za-z0-9_,-]+)/ {{
                auth_basic "private data";
                auth_basic_user_file {private}/$1;
            }}""")
    if websocket is not None:
        # The Upgrade handshake needs HTTP/1.1 and its headers passed on; an MQTT session is
        # idle between keepalives, longer than nginx's default minute.
        server += textwrap.dedent(f"""
            location = {websocket.path or "/"} {{
                proxy_pass http://{websocket.host}:{websocket.port or 80};
                proxy_http_version 1.1;
                proxy_set_header Upgrade $http_upgrade;
                proxy_set_header Connection "upgrade";
                proxy_read_timeout 1h;
                proxy_send_timeout 1h;
            }}""")
    workers = f"user {user[0]} {user[1]};\n" if user else ""
    # keepalive_requests: nginx's default of 1000 would close a subscriber's connection
    # every thousand files.
    return workers + textwrap.dedent(f"""\
        daemon off;
        worker_processes 1;
        pid {base}/nginx.pid;
        error_log {base}/error.log;
        events {{ worker_connections 256; }}
        http {{
            access_log off;
            sendfile on;
            disable_symlinks on;
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
